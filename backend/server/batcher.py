"""`Batcher`: one queue per model; requests from many clients merged into token-bounded batches.

How a batch forms (the loop in `Batcher._loop`):
1. Take the oldest queued request; prepare it (tokenise, preprocess its visuals) on the model's thread.
2. Keep taking requests while the batch holds fewer than `max_batch_tokens` tokens and the oldest request
   has waited less than `max_delay_ms` (requests that queued while the model was busy join at once).
3. Run all their queries through the engine's scorer in one call: token-budget forwards, and shared-prefix
   reuse across requests (identical reference images decode to one object, so they share a prefix).
   Requests that generate text (reasons, reasoning-first chain of thought, samples=k) merge with the requests of
   an equal config (and the same `reasons`) into one batched generation; plain scoring requests merge with each
   other whatever their config (`Job.merge_key`). Each kind runs as its own engine call, in order of arrival.
4. Read each request's scores with its own answer words and normalisation; resolve its future.

Requests whose client went away or timed out are dropped before they cost a forward, and a running batch is
abandoned between forwards when all its clients are gone or the server is stopping (`abort`). A query longer than
`max_query_tokens` fails alone with 413 before any forward. A batch that fails is
retried request by request, so one bad request never fails the others. A generating request's sampled judgements
are seeded per request (query i of a request is keyed i), so merging never changes its texts. One worker thread per
model runs every forward.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from ..holding import holding
from ..scoring.scorer import ScoringStopped
from .errors import ApiError
from .limits import check_query_tokens


@dataclass(eq=False)
class Job:
    """One request's queries waiting for the model."""

    queries: list[Any]
    config: Any  # ScoringConfig
    reasons: bool
    future: asyncio.Future
    alive: Callable[[], bool] = lambda: True
    enqueued: float = field(default_factory=time.perf_counter)
    prepared: list[Any] | None = None
    tokens: int = 0
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def generates(self) -> bool:
        """True when scoring needs text generation (reasons or reasoning-first CoT)."""
        return self.reasons or self.config.cot == "reasoning_first"

    @property
    def merge_key(self) -> Any:
        """Jobs with equal keys share an engine call: all plain scoring jobs; generating jobs of one config."""
        return (self.config, self.reasons) if self.generates else None

    @property
    def budget_tokens(self) -> int:
        """Tokens this job adds to a batch: its prompts, plus every token it may generate."""
        if not self.generates:
            return self.tokens
        return self.tokens + len(self.queries) * self.config.reason_tokens * self.config.samples

    def abandoned(self) -> bool:
        """True when nobody waits for the result any more (client gone, timed out, cancelled)."""
        return self.future.done() or not self.alive()


_STOP = object()


class Batcher:
    """Per-model request queue and the worker that batches it."""

    def __init__(self, name: str, model: Any, settings: Any, metrics: Any = None):
        self.name = name
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self.closing = False
        self.aborting = False  # the server is stopping: fail what is left, abandon running batches
        self.closed = asyncio.Event()
        self.queued = 0
        self.in_flight = 0  # requests submitted and not answered yet (queued or running)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._closer: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rewarddance-{name}")

    @property
    def max_tokens(self) -> int:
        """Tokens per batch: the server's setting, else the model's own budget."""
        return self.settings.max_batch_tokens or self.model.batch_tokens(self.model.config)

    @property
    def busy(self) -> bool:
        """True while a request is queued or running (an eviction waits for this to clear)."""
        return self.in_flight > 0

    def abort(self) -> None:
        """Stop now: running batches end at their next forward, queued requests fail with 503."""
        self.aborting = True

    def _ensure_started(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def submit(
        self,
        queries: list[Any],
        config: Any,
        reasons: bool = False,
        alive: Callable[[], bool] = lambda: True,
        timeout: float | None = None,
    ) -> tuple[list[float], list[str] | None, dict, list[float] | None]:
        """Queue queries and wait for (scores, reasons, usage, spread); 503 when the queue is full, 504 on timeout.

        `spread`: the standard deviation of each query's sampled judgements (samples > 1), else None."""
        if self.closing:
            raise ApiError(
                503, "model_unloading", f"model {self.name!r} is being unloaded; retry", {"Retry-After": "1"}
            )
        if self.queued >= self.settings.max_queue:
            if self.metrics is not None:
                self.metrics.rejected.labels(self.name).inc()
            raise ApiError(
                503,
                "queue_full",
                f"model {self.name!r} has {self.queued} requests queued "
                f"(max_queue {self.settings.max_queue}); retry later",
                {"Retry-After": "1"},
            )
        self._ensure_started()
        job = Job(queries, config, reasons, asyncio.get_running_loop().create_future(), alive)
        self.queued += 1
        self.in_flight += 1
        self._set_depth()
        self._queue.put_nowait(job)
        try:
            return await asyncio.wait_for(job.future, timeout)
        except asyncio.TimeoutError:
            raise ApiError(
                504,
                "timeout",
                f"the request did not finish within {timeout:g} s "
                "(request_timeout_s); send fewer images or raise the timeout",
            ) from None
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        """Finish every queued request, then stop the worker and its thread.

        Shielded: a caller that is cancelled (its client disconnected) does not stop the drain, and
        `closed` is always set in the end, so a reload waiting for it never hangs.
        """
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self._drain_and_stop())
        await asyncio.shield(self._closer)

    async def _drain_and_stop(self) -> None:
        self.closing = True
        try:
            if self._task is not None:
                self._queue.put_nowait(_STOP)
                await self._task
                self._task = None
            await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        finally:
            self.closed.set()

    # --- the worker ------------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            job = await self._queue.get()
            if job is _STOP:
                return
            batches, stop = await self._gather(job)
            for batch in batches:
                await self._run(batch)
            if stop:
                return

    async def _next(self, deadline: float) -> Any:
        """The next queued item, waiting until `deadline` (perf_counter seconds); None when none came."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), remaining)
        except asyncio.TimeoutError:
            return None

    async def _gather(self, first: Job) -> tuple[list[list[Job]], bool]:
        """Jobs for one round, starting with `first`, split by merge key into engine calls (in order of arrival):
        (batches, whether the stop marker was reached)."""
        batches: dict[Any, list[Job]] = {}
        tokens = 0
        deadline = first.enqueued + self.settings.max_delay_ms / 1000.0
        job: Any = first
        while job is not None:
            if job is _STOP:
                return list(batches.values()), True
            self._dequeued()
            if await self._prepare(job):
                batches.setdefault(job.merge_key, []).append(job)
                tokens += job.budget_tokens
                if tokens >= self.max_tokens:
                    break
            job = await self._next(deadline)
        return list(batches.values()), False

    def _dequeued(self) -> None:
        self.queued -= 1
        self._set_depth()

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name).set(self.queued)

    async def _in_thread(self, fn: Callable, *args: Any) -> Any:
        """Run on this model's worker thread (the only thread that touches the model)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _prepare(self, job: Job) -> bool:
        """Tokenise and preprocess a job; False (with the job failed) when it is abandoned or invalid."""
        if self._dropped(job):
            return False
        job.usage["queue_ms"] = (time.perf_counter() - job.enqueued) * 1000.0
        try:
            job.prepared = await self._in_thread(_prepare_queries, self.model, job.queries)
            check_query_tokens([len(p) for p in job.prepared], self.settings.max_query_tokens)
        except Exception as exc:
            _fail(job, exc)
            return False
        job.tokens = sum(len(p) for p in job.prepared)
        return True

    async def _run(self, batch: list[Job]) -> None:
        """Score (or generate for) a batch in one engine call; on failure retry job by job so only failing ones fail."""
        live = [j for j in batch if not self._dropped(j)]
        if not live:
            return
        started = time.perf_counter()
        before = self._tokens_counted()

        def stop() -> bool:  # asked on the model's thread before every forward
            return self.aborting or all(j.abandoned() for j in live)

        try:
            if live[0].generates:
                results = await self._in_thread(_run_with_generation, self.model, live, stop)
            else:
                results = await self._in_thread(
                    _score_prepared,
                    self.model,
                    [j.prepared for j in live],
                    [j.config for j in live],
                    self.max_tokens,
                    stop,
                )
        except ScoringStopped:
            for j in live:
                self._dropped(j)
            return
        except Exception as exc:
            if len(live) > 1:
                for j in live:
                    await self._run([j])
                return
            _fail(live[0], exc)
            return
        compute = time.perf_counter() - started
        self._record_batch(live, compute, self._tokens_counted() - before)
        for job, (scores, texts, spread) in zip(live, results):
            job.usage.update(
                compute_ms=compute * 1000.0, batch_requests=len(live), queries=len(job.queries), tokens=job.tokens
            )
            if not job.future.done():
                job.future.set_result((scores, texts, job.usage, spread))

    def _tokens_counted(self) -> int:
        stats = getattr(getattr(self.model, "scorer", None), "stats", None)
        return int(stats["tokens"]) if stats is not None else 0

    def _record_batch(self, jobs: list[Job], compute: float, tokens: int) -> None:
        if self.metrics is None:
            return
        m = self.metrics
        m.batches.labels(self.name).inc()
        m.batch_requests.labels(self.name).observe(len(jobs))
        m.batched_queries.labels(self.name).inc(sum(len(j.queries) for j in jobs))
        m.compute_seconds.labels(self.name).observe(compute)
        m.tokens.labels(self.name).inc(tokens)
        for j in jobs:
            m.queue_seconds.labels(self.name).observe(j.usage.get("queue_ms", 0.0) / 1000.0)

    def _dropped(self, job: Job) -> bool:
        """True (with the job resolved) when it must not run: its client is gone, or the server is stopping."""
        if job.abandoned():
            self._count_abandoned(job)
            return True
        if self.aborting:
            _fail(job, ApiError(503, "server_stopping", "the server is shutting down; retry", {"Retry-After": "5"}))
            return True
        return False

    def _count_abandoned(self, job: Job) -> None:
        if self.metrics is not None:
            self.metrics.abandoned.labels(self.name).inc()
        if not job.future.done():
            job.future.cancel()


def _fail(job: Job, exc: Exception) -> None:
    """Resolve a job with the error the client should see."""
    if job.future.done():
        return
    if isinstance(exc, ApiError):
        job.future.set_exception(exc)
    elif isinstance(exc, ValueError):
        job.future.set_exception(ApiError(422, "invalid_input", str(exc)))
    else:
        job.future.set_exception(ApiError(500, "scoring_failed", f"{type(exc).__name__}: {exc}"))


# --- run on the model's thread -------------------------------------------------------------------------------
def _prepare_queries(model: Any, queries: list[Any]) -> list[Any]:
    with holding(model), torch.no_grad():
        return model.scorer.prepare(queries)


Answer = tuple[list[float], list[str] | None, list[float] | None]  # one job's scores, reasons, spread


def _score_prepared(
    model: Any, prepared: list[list[Any]], configs: list[Any], max_tokens: int, stop: Callable[[], bool]
) -> list[Answer]:
    """One engine call over every job's prepared queries; each job's scores read with its own config."""
    flat = [p for rows in prepared for p in rows]
    base = model.config
    with holding(model), torch.no_grad():
        logits = model.scorer.last_logits(flat, max_tokens, base.prefix_reuse, base.min_prefix_tokens, stop)
        out, start = [], 0
        for rows, config in zip(prepared, configs):
            scores = model.read_scores(logits[start : start + len(rows)], config, [p.pairwise for p in rows])
            out.append((scores.tolist(), None, None))
            start += len(rows)
    return out


def _run_with_generation(model: Any, jobs: list[Job], stop: Callable[[], bool]) -> list[Answer]:
    """One batched generation over the queries of jobs that share a config; each query keyed within its job."""
    queries = [q for j in jobs for q in j.queries]
    prepared = [p for j in jobs for p in j.prepared]
    keys = [i for j in jobs for i in range(len(j.queries))]
    with holding(model), torch.no_grad():
        judged = model.run(queries, jobs[0].config, jobs[0].reasons, prepared=prepared, keys=keys, stop=stop)
    out, start = [], 0
    for j in jobs:
        end = start + len(j.queries)
        texts = judged.reasons[start:end] if judged.reasons is not None else None
        spread = judged.spread[start:end].tolist() if judged.spread is not None else None
        out.append((judged.scores[start:end].tolist(), texts, spread))
        start = end
    return out
