"""`ModelManager`: models by configured name, loaded on first use or at start, within a memory budget.

- A request names a model; only configured names resolve (never a path from the request).
- Loading runs in a worker thread; loads are serialised so the memory budget is never overshot by a race.
- The budget counts the bytes of loaded weights per memory kind (GPU, CPU). Before a load the least
  recently used unpinned models are evicted until the estimate fits; after it, the measured size is checked.
- Each loaded model has one `Batcher`, whose single worker thread is the only code that runs the model:
  one forward at a time per model object.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..memory_estimate import MemoryEstimate, estimate_memory
from .batcher import Batcher
from .errors import ApiError
from .settings import MODEL_NAME_RE, ModelSpec, ServerSettings

Loader = Callable[[ModelSpec], Any]
DEFAULT_MAX_PIXELS = 28 * 28 * 1280  # the Qwen checkpoints' own image budget, for specs that set none


def load_reward_model(spec: ModelSpec) -> Any:
    """Load one configured model with the engine's loader (safetensors only, remote code as configured)."""
    from ..reward_model import RewardModel

    return RewardModel.from_pretrained(spec.path, **spec.load_options())


def memory_kind(device: torch.device) -> str:
    """'gpu' for accelerator memory, 'cpu' for host memory."""
    return "cpu" if device.type in ("cpu", "meta") else "gpu"


def model_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of parameters and buffers, per memory kind."""
    out = {"gpu": 0, "cpu": 0}
    seen: set[int] = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue  # tied weights count once
        seen.add(t.data_ptr())
        out[memory_kind(t.device)] += t.numel() * t.element_size()
    return out


def spec_estimate(spec: ModelSpec, batch_tokens: int | None = None) -> MemoryEstimate:
    """The memory estimate of a configured model (memory_estimate.py) for its dtype, quantization and pixel
    budget: weights from its safetensors headers or config.json (a hub id: the hub cache's config; unknown when
    it has none)."""
    from ..scoring.config import default_batch_tokens

    device = "cuda" if _on_gpu(spec) else "cpu"
    return estimate_memory(
        spec.path,
        spec.dtype,
        spec.quantization,
        max_pixels=spec.max_pixels or DEFAULT_MAX_PIXELS,
        batch_tokens=batch_tokens or default_batch_tokens(device),
        device=device,
    )


def estimate_bytes(spec: ModelSpec) -> dict[str, int]:
    """Estimated weight bytes of a configured model on the memory kind it will load to (0 when unknown: the
    measured size is checked after the load)."""
    size = spec_estimate(spec).weight_bytes or 0
    return {"gpu": size, "cpu": 0} if _on_gpu(spec) else {"gpu": 0, "cpu": size}


def _on_gpu(spec: ModelSpec) -> bool:
    """True when the model will load onto a GPU."""
    return spec.device.startswith("cuda") or (spec.device == "auto" and torch.cuda.is_available())


EVICTION_POLL_S = 0.05  # how often an eviction waiting for a busy model looks again
IDLE_S = 1.0  # a model unused for this long, with nothing queued, may be evicted before min_residency_s


@dataclass(eq=False)
class LoadedModel:
    """A loaded reward model, its batcher and what it costs."""

    name: str
    model: Any  # RewardModel (or anything with its interface)
    batcher: Batcher
    bytes: dict[str, int]
    pinned: bool
    external: bool = False  # registered by its owner (e.g. ComfyUI nodes): never loaded or freed here
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        """JSON view for GET /v1/models."""
        vlm = getattr(self.model, "vlm", None)
        return {
            "loaded": True,
            "pinned": self.pinned,
            "external": self.external,
            "memory_bytes": dict(self.bytes),
            "device": str(getattr(vlm, "device", "")),
            "dtype": str(getattr(vlm, "dtype", "")).replace("torch.", ""),
            "quantization": getattr(vlm, "quantization", "none"),
            "family": getattr(getattr(vlm, "family", None), "name", None),
            "queued": self.batcher.queued,
            "loaded_at": self.loaded_at,
            "last_used": self.last_used,
        }


class ModelManager:
    """Configured models by name; loads, evicts (LRU, pinning, memory budget) and unloads them."""

    def __init__(self, settings: ServerSettings, metrics: Any = None, loader: Loader = load_reward_model):
        self.settings = settings
        self.metrics = metrics
        self.loader = loader
        self.loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._load_lock = asyncio.Lock()
        self._loading: dict[str, asyncio.Task] = {}

    # --- names ---------------------------------------------------------------------------------------------
    def resolve(self, name: Any) -> str:
        """A request's model name -> a configured name (None = the default); 400/404 otherwise."""
        if name is None:
            if not self.settings.models:
                raise ApiError(404, "unknown_model", "no model is configured or loaded yet; load a reward model first")
            return self.settings.default_model or next(iter(self.settings.models))
        if not isinstance(name, str):
            raise ApiError(
                400, "invalid_request", f"model must be a string (a configured model name), got {type(name).__name__}"
            )
        if not MODEL_NAME_RE.match(name) or ".." in name or "/" in name or "\\" in name:
            raise ApiError(
                400,
                "invalid_model_name",
                f"model {name!r} is not a model name; requests name a configured model "
                f"({', '.join(self.settings.models)}), never a path",
            )
        if name not in self.settings.models:
            raise ApiError(
                404, "unknown_model", f"model {name!r} is not configured; configured: {', '.join(self.settings.models)}"
            )
        return name

    # --- loading -------------------------------------------------------------------------------------------
    async def get(self, name: str | None) -> LoadedModel:
        """The loaded model for a request (loading it on first use) and mark it recently used."""
        name = self.resolve(name)
        entry = self.loaded.get(name)
        if entry is None or entry.batcher.closing:
            entry = await self.load(name)
        self.loaded.move_to_end(name)
        entry.last_used = time.time()
        return entry

    async def submit(
        self, name: str, queries: list, config: Any, reasons: bool, alive: Any, timeout: float | None
    ) -> tuple[LoadedModel, tuple]:
        """Queue a request on the model `name`: (the entry that answered, (scores, reasons, usage, spread)).

        A model being unloaded (evicted for another) is waited for and loaded again, within `timeout`,
        instead of failing the request with 503."""
        deadline = None if timeout is None else time.monotonic() + timeout
        entry = await self.get(name)
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return entry, await entry.batcher.submit(queries, config, reasons, alive, remaining)
            except ApiError as exc:
                if exc.type != "model_unloading" or (remaining is not None and remaining < 0.05):
                    raise
            try:
                await asyncio.wait_for(entry.batcher.closed.wait(), remaining)
                entry = await asyncio.wait_for(
                    self.get(name), None if deadline is None else deadline - time.monotonic()
                )
            except asyncio.TimeoutError:
                raise ApiError(
                    504, "timeout", f"model {name!r} was being swapped out and did not come back within {timeout:g} s"
                ) from None

    async def load(self, name: str) -> LoadedModel:
        """Load a configured model (no-op when loaded), evicting LRU models to stay in the memory budget.

        One load task per model, shielded: a caller that gives up (client disconnect, timeout) neither
        cancels a load other requests wait for nor makes the next caller start a second copy.
        """
        name = self.resolve(name)
        task = self._loading.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(name))
            self._loading[name] = task
            task.add_done_callback(lambda _t: self._loading.pop(name, None))
        return await asyncio.shield(task)

    async def _load(self, name: str) -> LoadedModel:
        async with self._load_lock:
            entry = self.loaded.get(name)
            if entry is not None and not entry.batcher.closing:
                return entry
            if entry is not None:  # being unloaded: let it finish and free its memory first
                await entry.batcher.closed.wait()
            spec = self.settings.models[name]
            await self._make_room(estimate_bytes(spec), keep=name)
            started = time.perf_counter()
            try:
                model = await asyncio.to_thread(self.loader, spec)
            except Exception as exc:
                raise ApiError(500, "model_load_failed", f"model {name!r} could not be loaded: {exc}") from exc
            entry = self._register(name, model, pinned=spec.pinned)
            if self.metrics is not None:
                self.metrics.model_loads.labels(name).inc()
                self.metrics.load_seconds.labels(name).observe(time.perf_counter() - started)
            try:
                await self._make_room({"gpu": 0, "cpu": 0}, keep=name)
            except ApiError:
                await self.unload(name)
                raise
            return entry

    def register(self, name: str, model: Any, pinned: bool = True) -> LoadedModel:
        """Serve a model someone else loaded (e.g. ComfyUI's loader node) under `name`; never freed here."""
        if name not in self.settings.models:
            vlm = getattr(model, "vlm", None)
            self.settings.models[name] = ModelSpec(
                name=name,
                path=str(getattr(vlm, "path", name)),
                dtype=str(getattr(vlm, "dtype", "auto")).replace("torch.", ""),
                quantization=getattr(vlm, "quantization", "none"),
            )
        if self.settings.default_model is None:
            self.settings.default_model = name
        return self._register(name, model, pinned=pinned, external=True)

    def forget(self, model: Any) -> list[LoadedModel]:
        """Stop serving an external model (its host freed it); returns the dropped entries, to be closed."""
        dropped = []
        for name, entry in list(self.loaded.items()):
            if entry.model is model and entry.external:
                dropped.append(self.loaded.pop(name))
                self.settings.models.pop(name, None)
                if self.settings.default_model == name:
                    self.settings.default_model = next(iter(self.settings.models), None)
        return dropped

    def _register(self, name: str, model: Any, pinned: bool, external: bool = False) -> LoadedModel:
        inner = getattr(getattr(model, "vlm", None), "model", None)
        size = model_bytes(inner) if isinstance(inner, torch.nn.Module) else {"gpu": 0, "cpu": 0}
        batcher = Batcher(name, model, self.settings, self.metrics)
        entry = LoadedModel(name, model, batcher, size, pinned, external)
        self.loaded[name] = entry
        self.loaded.move_to_end(name)
        return entry

    def used_bytes(self, exclude: str | None = None) -> dict[str, int]:
        """Bytes of loaded weights per memory kind."""
        out = {"gpu": 0, "cpu": 0}
        for n, e in self.loaded.items():
            if n != exclude:
                for kind in out:
                    out[kind] += e.bytes[kind]
        return out

    def _over_budget(self, extra: dict[str, int]) -> list[str]:
        """Memory kinds whose budget is exceeded with `extra` bytes added."""
        used = self.used_bytes()
        limits = {"gpu": self.settings.gpu_memory, "cpu": self.settings.cpu_memory}
        return [k for k, limit in limits.items() if limit is not None and used[k] + extra[k] > limit]

    async def _make_room(self, extra: dict[str, int], keep: str) -> None:
        """Evict least recently used unpinned models until `extra` fits; 507 when it cannot.

        A model with requests queued or running is evicted only once they are served or it has been loaded
        for `min_residency_s` (so two models under a budget for one take turns serving their queues instead of
        paying a load per request)."""
        while over := self._over_budget(extra):
            victims = [n for n, e in self.loaded.items() if n != keep and not e.pinned]
            ready = [n for n in victims if self._evictable(self.loaded[n])]
            if victims and not ready:
                await asyncio.sleep(EVICTION_POLL_S)
                continue
            victims = ready
            if not victims:
                used = self.used_bytes()
                raise ApiError(
                    507,
                    "insufficient_memory",
                    f"model {keep!r} does not fit the {'/'.join(over)} memory budget "
                    f"(loaded: {used}, needed: {extra}); unload or unpin a model, or raise "
                    f"--gpu-memory / --cpu-memory",
                )
            await self.unload(victims[0], reason="evicted")

    def _evictable(self, entry: LoadedModel) -> bool:
        """Resident for at least min_residency_s, or idle: nothing queued or running and not used for IDLE_S (the
        requests that waited for its load reach its queue a moment after it is registered)."""
        now = time.time()
        if now - entry.loaded_at >= self.settings.min_residency_s:
            return True
        return not entry.batcher.busy and now - max(entry.loaded_at, entry.last_used) >= IDLE_S

    async def unload(self, name: str, reason: str = "unloaded") -> bool:
        """Finish the model's queued requests, then free it; False when it was not loaded."""
        name = self.resolve(name)
        entry = self.loaded.get(name)
        if entry is None:
            return False
        await entry.batcher.close()
        if self.loaded.get(name) is entry:
            del self.loaded[name]
        if self.metrics is not None:
            self.metrics.model_unloads.labels(name, reason).inc()
        del entry
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return True

    async def preload(self) -> None:
        """Load every model configured with preload = true."""
        for name, spec in self.settings.models.items():
            if spec.preload:
                await self.load(name)

    async def close(self) -> None:
        """Finish queued work and stop every batcher."""
        for entry in list(self.loaded.values()):
            await entry.batcher.close()

    def estimate(self, spec: ModelSpec) -> dict[str, Any]:
        """The spec's memory estimate as JSON (weight_bytes null when unknown); never fails a listing."""
        try:
            return spec_estimate(spec, self.settings.max_batch_tokens).as_dict()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return {
                "weight_bytes": None,
                "activation_bytes": None,
                "total_bytes": None,
                "source": "unknown",
                "error": str(exc),
            }

    def describe(self) -> list[dict[str, Any]]:
        """Every configured model, loaded or not, for GET /v1/models."""
        out = []
        for name, spec in self.settings.models.items():
            row: dict[str, Any] = {
                "name": name,
                "default": name == self.settings.default_model,
                "pinned": spec.pinned,
                "loaded": False,
                "quantization": spec.quantization,
                "estimate": self.estimate(spec),
            }
            if name in self.loaded:
                row.update(self.loaded[name].describe())
            out.append(row)
        return out
