"""The dynamic batcher on a fake model: merging, token bounds, queue limit, timeouts, dropped clients, isolation."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter

import pytest
import torch

from rewarddance.backend.scoring.config import ScoringConfig
from rewarddance.backend.scoring.results import Judgements
from rewarddance.backend.scoring.scorer import ScoringStopped
from rewarddance.backend.server.batcher import Batcher
from rewarddance.backend.server.errors import ApiError
from rewarddance.backend.server.settings import ServerSettings


class FakePrepared:
    def __init__(self, value: float, tokens: int):
        self.value, self.tokens = value, tokens
        self.pairwise = False

    def __len__(self) -> int:
        return self.tokens


class FakeScorer:
    """Prepared query = its value; the 'logit' of a query is its value; records every engine call."""

    def __init__(self, tokens_per_query: int):
        self.tokens_per_query = tokens_per_query
        self.calls: list[list[float]] = []
        self.gate = threading.Event()  # cleared: engine calls wait inside the model
        self.gate.set()
        self.entered = threading.Event()  # set once an engine call has started
        self.stats = Counter()
        self.stopped = 0

    def prepare(self, queries):
        if any(q < 0 for q in queries):
            raise ValueError("negative values cannot be scored")
        return [FakePrepared(q, self.tokens_per_query) for q in queries]

    def last_logits(self, prepared, max_tokens, prefix_reuse, min_prefix, stop=None):
        self.entered.set()
        self.gate.wait(10)
        if stop is not None and stop():  # the real scorer asks before every forward; here: once, after the gate
            self.stopped += 1
            raise ScoringStopped("stopped")
        values = [p.value for p in prepared]
        self.calls.append(values)
        if any(math.isnan(v) for v in values):
            raise RuntimeError("NaN input broke the forward")
        self.stats["tokens"] += sum(len(p) for p in prepared)
        return torch.tensor(values)[:, None]


class FakeModel:
    def __init__(self, tokens_per_query: int = 10):
        self.config = ScoringConfig()
        self.scorer = FakeScorer(tokens_per_query)
        self.runs: list[tuple[list[float], list[int]]] = []  # every generating engine call: (queries, keys)

    def batch_tokens(self, config):
        return 1000

    def read_scores(self, logits, config, pairwise=None):
        return logits[:, 0] * (2.0 if config.normalize == "yes_no" else 1.0)

    def run(self, queries, config, reasons, prepared=None, keys=None, stop=None):
        self.scorer.entered.set()
        self.scorer.gate.wait(10)
        assert [p.value for p in prepared] == queries  # the batcher's prepared queries are passed on
        self.runs.append((list(queries), list(keys)))
        texts = [f"reason {q}" for q in queries] if reasons or config.cot == "reasoning_first" else None
        spread = torch.tensor(queries) / 10 if config.samples > 1 else None
        # a sampled score depends on the query's key (its index in its request), as the real seeding does
        scores = torch.tensor(queries) + (torch.tensor(keys, dtype=torch.float32) * 100 if config.samples > 1 else 0)
        return Judgements(scores, texts, spread)


def make(max_batch_tokens=1000, max_queue=100, max_delay_ms=5.0, tokens_per_query=10):
    settings = ServerSettings(max_batch_tokens=max_batch_tokens, max_queue=max_queue, max_delay_ms=max_delay_ms)
    model = FakeModel(tokens_per_query)
    return Batcher("fake", model, settings), model.scorer


def run(coro):
    return asyncio.run(coro)


async def in_model(scorer: FakeScorer) -> None:
    """Wait until a batch is inside the (gated) engine call."""
    assert await asyncio.to_thread(scorer.entered.wait, 10), "no batch reached the model"


async def until(condition, steps: int = 100) -> None:
    """Let the event loop run until `condition()` holds: ordering by events, not by wall-clock sleeps."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def test_requests_queued_while_busy_are_merged_and_routed_back():
    async def main():
        batcher, scorer = make()
        scorer.gate.clear()
        first = asyncio.create_task(batcher.submit([1.0], ScoringConfig()))
        await in_model(scorer)  # the first request is in the model now
        rest = [asyncio.create_task(batcher.submit([10.0 * i, 10.0 * i + 1], ScoringConfig())) for i in range(1, 6)]
        await until(lambda: batcher.queued == 5)
        scorer.gate.set()
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return scorer.calls, results

    calls, results = run(main())
    assert calls[0] == [1.0]
    assert len(calls) == 2 and sorted(calls[1]) == sorted(v for i in range(1, 6) for v in (10.0 * i, 10.0 * i + 1))
    assert results[0][0] == [1.0]
    for i, (scores, reasons, usage, spread) in enumerate(results[1:], 1):
        assert scores == [10.0 * i, 10.0 * i + 1] and reasons is None and spread is None
        assert usage["batch_requests"] == 5 and usage["queries"] == 2 and usage["tokens"] == 20


def test_each_request_is_read_with_its_own_config():
    async def main():
        batcher, scorer = make(max_delay_ms=50)
        a = asyncio.create_task(batcher.submit([3.0], ScoringConfig()))
        b = asyncio.create_task(batcher.submit([3.0], ScoringConfig(normalize="yes_no")))
        out = await asyncio.gather(a, b)
        await batcher.close()
        return scorer.calls, out

    calls, (a, b) = run(main())
    assert calls == [[3.0, 3.0]]  # one engine call
    assert a[0] == [3.0] and b[0] == [6.0]


def test_batches_stop_at_the_token_budget():
    async def main():
        batcher, scorer = make(max_batch_tokens=25, max_delay_ms=200)
        scorer.gate.clear()
        tasks = [asyncio.create_task(batcher.submit([float(i)], ScoringConfig())) for i in range(7)]
        await in_model(scorer)
        scorer.gate.set()
        await asyncio.gather(*tasks)
        await batcher.close()
        return scorer.calls

    calls = run(main())
    assert [len(c) for c in calls] == [3, 3, 1]  # 10 tokens each: a batch closes once it reaches 25
    assert sorted(v for c in calls for v in c) == [float(i) for i in range(7)]


def test_full_queue_answers_503_with_retry_after():
    async def main():
        batcher, scorer = make(max_queue=2)
        scorer.gate.clear()
        busy = asyncio.create_task(batcher.submit([1.0], ScoringConfig()))
        await in_model(scorer)
        queued = [asyncio.create_task(batcher.submit([2.0], ScoringConfig())) for _ in range(2)]
        await until(lambda: batcher.queued == 2)
        with pytest.raises(ApiError) as err:
            await batcher.submit([3.0], ScoringConfig())
        scorer.gate.set()
        await asyncio.gather(busy, *queued)
        await batcher.close()
        return err.value

    err = run(main())
    assert err.status == 503 and err.type == "queue_full" and err.headers["Retry-After"] == "1"


def test_timed_out_and_disconnected_requests_cost_no_compute():
    async def main():
        batcher, scorer = make()
        scorer.gate.clear()
        busy = asyncio.create_task(batcher.submit([1.0], ScoringConfig()))
        await in_model(scorer)
        with pytest.raises(ApiError) as err:
            await batcher.submit([666.0], ScoringConfig(), timeout=0.05)
        gone = asyncio.create_task(batcher.submit([777.0], ScoringConfig(), alive=lambda: False))
        kept = asyncio.create_task(batcher.submit([2.0], ScoringConfig()))
        await until(lambda: batcher.queued == 3)  # the timed-out request still waits in the queue
        scorer.gate.set()
        await busy
        assert (await kept)[0] == [2.0]
        with pytest.raises(asyncio.CancelledError):
            await gone
        await batcher.close()
        return err.value, scorer.calls

    err, calls = run(main())
    assert err.status == 504 and err.type == "timeout"
    computed = [v for c in calls for v in c]
    assert 666.0 not in computed and 777.0 not in computed and sorted(computed) == [1.0, 2.0]


def test_a_failing_request_does_not_fail_the_others():
    async def main():
        batcher, scorer = make(max_delay_ms=50)
        tasks = [
            asyncio.create_task(batcher.submit(q, ScoringConfig())) for q in ([1.0], [float("nan")], [-1.0], [4.0, 5.0])
        ]
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return out

    good, broken, invalid, good2 = run(main())
    assert good[0] == [1.0] and good2[0] == [4.0, 5.0]
    assert isinstance(broken, ApiError) and broken.status == 500 and "NaN" in broken.message
    assert isinstance(invalid, ApiError) and invalid.status == 422 and "negative" in invalid.message


def test_a_generating_request_runs_apart_from_scoring_ones_and_close_drains_the_queue():
    async def main():
        batcher, scorer = make()
        scorer.gate.clear()
        tasks = [
            asyncio.create_task(batcher.submit([1.0], ScoringConfig())),
            asyncio.create_task(batcher.submit([2.0], ScoringConfig(), reasons=True)),
            asyncio.create_task(batcher.submit([3.0], ScoringConfig())),
        ]
        await in_model(scorer)
        closing = asyncio.create_task(batcher.close())
        await until(lambda: batcher.closing)
        with pytest.raises(ApiError) as err:
            await batcher.submit([4.0], ScoringConfig())
        scorer.gate.set()
        out = await asyncio.gather(*tasks)
        await closing
        return out, err.value

    (a, b, c), err = run(main())
    assert a[0] == [1.0] and c[0] == [3.0]
    assert b[0] == [2.0] and b[1] == ["reason 2.0"]
    assert err.status == 503 and err.type == "model_unloading"


def test_a_cancelled_close_still_drains_and_marks_closed():
    """An unload whose HTTP client disconnects must not kill the worker or leave `closed` unset."""

    async def main():
        batcher, scorer = make()
        scorer.gate.clear()
        job = asyncio.create_task(batcher.submit([5.0], ScoringConfig()))
        await in_model(scorer)
        closer = asyncio.create_task(batcher.close())
        await until(lambda: batcher.closing)
        closer.cancel()
        scorer.gate.set()
        result = await job
        await asyncio.wait_for(batcher.closed.wait(), 5)
        await batcher.close()  # idempotent
        return result

    assert run(main())[0] == [5.0]


def test_cancelled_callers_share_one_model_load():
    """Clients that give up during a cold load do not start extra loads of the same model."""
    from rewarddance.backend.server.manager import ModelManager
    from rewarddance.backend.server.settings import ModelSpec

    calls = []
    started, release = threading.Event(), threading.Event()

    def slow_loader(spec):
        calls.append(threading.get_ident())
        started.set()
        release.wait(10)  # the load lasts until every caller has given up
        return FakeModel()

    async def main():
        settings = ServerSettings(models={"m": ModelSpec("m", "/nowhere")})
        manager = ModelManager(settings, loader=slow_loader)
        for i in range(3):
            task = asyncio.create_task(manager.get("m"))
            if i == 0:
                assert await asyncio.to_thread(started.wait, 10)  # the load is running
            for _ in range(3):
                await asyncio.sleep(0)  # this caller reaches the shared load and waits on it
            task.cancel()
        assert "m" in manager._loading and "m" not in manager.loaded  # still loading while callers gave up
        release.set()
        entry = await manager.get("m")
        await manager.close()
        return entry

    entry = run(main())
    assert len(calls) == 1 and entry.name == "m"


def test_forgetting_an_external_model_drops_it_and_its_name():
    from rewarddance.backend.server.manager import ModelManager

    settings = ServerSettings(models={})
    manager = ModelManager(settings)
    a, b = FakeModel(), FakeModel()
    manager.register("a", a)
    manager.register("b", b)
    assert settings.default_model == "a"
    dropped = manager.forget(a)
    assert [e.name for e in dropped] == ["a"] and list(manager.loaded) == ["b"]
    assert "a" not in settings.models and settings.default_model == "b"
    assert manager.forget(a) == []


def test_a_running_batch_is_abandoned_between_forwards_when_its_clients_are_gone():
    batcher, scorer = make()

    async def scenario():
        gone = {"flag": False}
        scorer.gate.clear()
        task = asyncio.ensure_future(batcher.submit([1.0, 2.0], ScoringConfig(), alive=lambda: not gone["flag"]))
        await in_model(scorer)
        gone["flag"] = True  # the client disconnects while its batch is inside the engine call
        scorer.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await batcher.submit([3.0], ScoringConfig())  # the next request is served as usual

    scores, _, _, _ = run(scenario())
    assert scorer.stopped == 1 and scores == [3.0] and [3.0] in scorer.calls and [1.0, 2.0] not in scorer.calls


def test_abort_fails_running_and_queued_requests_with_503():
    batcher, scorer = make(max_batch_tokens=10)  # one query per batch: the second request stays queued

    async def scenario():
        scorer.gate.clear()
        running = asyncio.ensure_future(batcher.submit([1.0], ScoringConfig()))
        await in_model(scorer)
        queued = asyncio.ensure_future(batcher.submit([2.0], ScoringConfig()))
        await asyncio.sleep(0.05)
        batcher.abort()
        scorer.gate.set()
        return await asyncio.gather(running, queued, return_exceptions=True)

    results = run(scenario())
    assert all(isinstance(r, ApiError) and r.status == 503 and r.type == "server_stopping" for r in results), results
    assert scorer.stopped == 1 and scorer.calls == []


SAMPLED = ScoringConfig(cot="reasoning_first", samples=3, temperature=0.7)


def test_concurrent_generating_requests_merge_into_one_model_call():
    async def main():
        batcher, scorer = make()
        scorer.gate.clear()
        busy = asyncio.create_task(batcher.submit([1.0], ScoringConfig()))
        await in_model(scorer)  # both generating requests queue while the model is busy
        a = asyncio.create_task(batcher.submit([2.0, 3.0], SAMPLED))
        b = asyncio.create_task(batcher.submit([4.0], SAMPLED))
        await until(lambda: batcher.queued == 2)
        scorer.gate.set()
        out = await asyncio.gather(busy, a, b)
        await batcher.close()
        return batcher.model.runs, out

    runs, (_, a, b) = run(main())
    assert runs == [([2.0, 3.0, 4.0], [0, 1, 0])]  # one engine call; each query keyed within its own request
    assert a[0] == [2.0, 103.0] and a[1] == ["reason 2.0", "reason 3.0"] and a[3] == pytest.approx([0.2, 0.3])
    assert b[0] == [4.0] and b[1] == ["reason 4.0"] and b[3] == pytest.approx([0.4])
    assert a[2]["batch_requests"] == 2 and a[2]["queries"] == 2


def test_generating_requests_of_different_configs_run_as_separate_calls():
    async def main():
        batcher, scorer = make()
        scorer.gate.clear()
        busy = asyncio.create_task(batcher.submit([1.0], ScoringConfig()))
        await in_model(scorer)
        tasks = [
            asyncio.create_task(batcher.submit([2.0], SAMPLED)),
            asyncio.create_task(batcher.submit([3.0], ScoringConfig(cot="reasoning_first"))),
            asyncio.create_task(batcher.submit([4.0], ScoringConfig(), reasons=True)),
            asyncio.create_task(batcher.submit([5.0], ScoringConfig())),
            asyncio.create_task(batcher.submit([6.0], SAMPLED)),
        ]
        await until(lambda: batcher.queued == 5)
        scorer.gate.set()
        out = await asyncio.gather(busy, *tasks)
        await batcher.close()
        return batcher.model.runs, scorer.calls, out

    runs, calls, out = run(main())
    assert runs == [([2.0, 6.0], [0, 0]), ([3.0], [0]), ([4.0], [0])]  # in order of arrival
    assert calls == [[1.0], [5.0]]
    assert [o[0] for o in out] == [[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]


def test_a_generating_query_over_max_query_tokens_fails_alone_before_any_forward():
    async def main():
        settings = ServerSettings(max_batch_tokens=1000, max_query_tokens=50, max_delay_ms=5.0)
        model = FakeModel(tokens_per_query=60)
        batcher = Batcher("fake", model, settings)
        with pytest.raises(ApiError) as err:
            await batcher.submit([2.0], SAMPLED)
        await batcher.close()
        return err.value, model.runs

    err, runs = run(main())
    assert err.status == 413 and "max_query_tokens" in err.message and runs == []


def test_a_generating_batch_is_bounded_by_the_tokens_it_may_generate():
    async def main():
        batcher, scorer = make(max_batch_tokens=1000)
        scorer.gate.clear()
        busy = asyncio.create_task(batcher.submit([1.0], ScoringConfig()))
        await in_model(scorer)
        config = ScoringConfig(cot="reasoning_first", reason_tokens=100, samples=2, temperature=1.0)
        tasks = [asyncio.create_task(batcher.submit([float(i)], config)) for i in range(2, 8)]
        await until(lambda: batcher.queued == 6)
        scorer.gate.set()
        await asyncio.gather(busy, *tasks)
        await batcher.close()
        return batcher.model.runs

    runs = run(main())
    # each job: 10 prompt tokens + 100 reason tokens x 2 samples = 210; a batch closes once it reaches 1000
    assert [len(q) for q, _ in runs] == [5, 1]
