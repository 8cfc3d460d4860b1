"""ComfyUI adapter for reward-model memory: the VLM lives in a ModelPatcher that ComfyUI loads and unloads.

- The transformers model is wrapped in a small module and a `ModelPatcher`, so "Unload models" and
  "Free memory" in ComfyUI move it off the GPU like any checkpoint, and ComfyUI evicts it when a
  generator needs the memory.
- Before every scoring call `RewardModel.before_use` asks ComfyUI to load it back (`load_models_gpu`). When
  the GPU is short of memory ComfyUI loads it partially and streams the rest layer by layer
  (nodes/streaming.py): slower, never out of memory.
- Loaded models are cached weakly by their settings: they live as long as ComfyUI's node cache holds the
  loader's output, so re-running a graph reuses them and "Free model and node cache" releases them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import weakref
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import torch
from comfy.patcher_extension import CallbacksMP

from ..backend.memory_budget import Part, check_fits
from .streaming import make_streamable, move_buffers

_CACHE: weakref.WeakValueDictionary[tuple, Any] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()
# Model management is not thread-safe: ComfyUI's prompt thread loads and evicts models with no lock. Prompts run
# holding PROMPT_LOCK (see guard_prompts) and a reward model held from any other thread (the /rewarddance/ HTTP
# batchers) waits for it, so its loading, forwards and unloading never overlap a running prompt.
PROMPT_LOCK = threading.RLock()
IN_PROMPT: contextvars.ContextVar[bool] = contextvars.ContextVar("rewarddance_in_prompt", default=False)


def guard_prompts() -> None:
    """Make ComfyUI's prompt executor and its "Unload models" run holding PROMPT_LOCK (once; idempotent)."""
    import execution

    executor = execution.PromptExecutor
    if not getattr(executor.execute, "rewarddance_guarded", False):
        executor.execute = holding_prompt_lock(executor.execute)
    if not getattr(mm.unload_all_models, "rewarddance_guarded", False):
        mm.unload_all_models = holding_prompt_lock(mm.unload_all_models)


def holding_prompt_lock(fn: Any) -> Any:
    """`fn` run holding PROMPT_LOCK, marked as inside a prompt (reward models held there do not wait)."""

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        with PROMPT_LOCK:
            token = IN_PROMPT.set(True)
            try:
                return fn(*args, **kwargs)
            finally:
                IN_PROMPT.reset(token)

    guarded.rewarddance_guarded = True
    return guarded


def outside_prompts() -> Any:
    """The guard of a reward model: nothing inside a prompt (its nodes), PROMPT_LOCK from any other thread."""
    return contextlib.nullcontext() if IN_PROMPT.get() else PROMPT_LOCK


class VLMHolder(torch.nn.Module):
    """The transformers VLM as a plain module (ModelPatcher writes `.device`, which HF models do not allow)."""

    def __init__(self, vlm_model: torch.nn.Module, device: torch.device):
        super().__init__()
        self.vlm = vlm_model
        self.device = device


def device_choices() -> list[str]:
    """The device input's options, as ComfyUI names devices: 'default' (the device ComfyUI uses), 'cpu', then each
    GPU of ComfyUI's device type ('cuda:0', 'cuda:1', ...); only the first two when ComfyUI runs on the CPU."""
    main = mm.get_torch_device()
    if not isinstance(main, torch.device) or main.type == "cpu":
        return ["default", "cpu"]
    if main.index is None:  # a single-device backend such as mps
        return ["default", "cpu", main.type]
    module = getattr(torch, main.type, None)
    count = module.device_count() if hasattr(module, "device_count") else main.index + 1
    return ["default", "cpu", *(f"{main.type}:{i}" for i in range(count))]


def devices(device: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for the node's device choice ('default' = ComfyUI's device)."""
    if device == "cpu":
        return torch.device("cpu"), torch.device("cpu")
    if device == "default":
        return mm.get_torch_device(), mm.unet_offload_device()
    return torch.device(device), mm.unet_offload_device()


def load_managed(
    path: str,
    dtype: str,
    device: str,
    attn: str | None,
    max_pixels: int | None,
    keep_loaded: bool = True,
    on_use: Any = None,
    on_detach: Any = None,
    quantization: str = "none",
    judge: str = "yes_no",
) -> Any:
    """A RewardModel whose weights ComfyUI's model management moves between GPU and CPU (cached weakly).

    `on_use(model)` runs after ComfyUI has loaded it for an operation; `on_detach(model)` when ComfyUI
    takes it off its device (unload, eviction, or a reload). With `keep_loaded=False` it is unloaded after
    every operation (frees the GPU for the generator at the cost of a reload per scoring node). A quantised
    judge (int8/nf4, bitsandbytes) is loaded on its device and stays there, outside ComfyUI's model management
    (moving bitsandbytes' layers would quantise them again): it is freed when ComfyUI's node cache drops it.
    """
    from ..backend.devices import resolve_dtype
    from ..backend.reward_model import RewardModel

    load_device, offload_device = devices(device)
    quantized = quantization != "none"
    if quantized:  # bitsandbytes' layers are placed once, on the device they compute on
        offload_device = load_device
    key = (path, dtype, str(load_device), attn, max_pixels, quantization, judge)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            cached.after_use = None if keep_loaded else (lambda: unload(cached))
            return cached
        with torch.inference_mode(False):  # ordinary weights, so rewards can be differentiated (ReFL, gradient search)
            rm = RewardModel.from_pretrained(
                path,
                dtype=resolve_dtype(dtype, str(load_device)),
                device=str(offload_device),
                attn_implementation=attn,
                max_pixels=max_pixels,
                quantization=quantization,
                judge=judge,
            )
        holder = VLMHolder(rm.vlm.model, offload_device)
        if not quantized:
            make_streamable(holder, load_device)
        rm.vlm.execution_device = load_device  # inputs go there even while some weights stay in RAM
        patcher = comfy.model_patcher.ModelPatcher(holder, load_device=load_device, offload_device=offload_device)
        rm_ref = weakref.ref(rm)
        patcher.add_callback(CallbacksMP.ON_DETACH, lambda _patcher, _unpatch_all: forget_prefixes(rm_ref()))
        if on_detach is not None:
            patcher.add_callback(CallbacksMP.ON_DETACH, lambda _patcher, _unpatch_all: on_detach(rm_ref()))
        rm.comfy_patcher = patcher

        def before_use() -> None:
            if not quantized:  # ComfyUI moving bitsandbytes' layers would quantise them again: they stay put
                mm.load_models_gpu([patcher])  # partially when the GPU is short of memory (the rest streams)
            if getattr(holder, "model_lowvram", False):
                move_buffers(holder, load_device)
            if on_use is not None:
                on_use(rm_ref())

        rm.before_use = before_use
        rm.guard = outside_prompts
        rm.after_use = None if keep_loaded else (lambda: unload(rm_ref()))
        _CACHE[key] = rm
        return rm


def forget_prefixes(rm: Any) -> None:
    """Free a reward model's cached prefix KV caches when ComfyUI takes it off its device (they live there)."""
    if rm is not None:
        rm.clear_prefix_cache()


def unload(rm: Any) -> None:
    """Take the model out of ComfyUI's loaded models (weights go to the offload device)."""
    patcher = getattr(rm, "comfy_patcher", None)
    if patcher is not None:
        unload_patcher(lambda loaded: loaded is patcher)


def unload_patcher(which: Any) -> None:
    """Unload every loaded ModelPatcher for which `which(patcher)` is true (weights to the offload device,
    weight patches undone)."""
    for loaded in list(mm.current_loaded_models):
        if loaded.model is not None and which(loaded.model):
            loaded.model_unload()
            mm.current_loaded_models.remove(loaded)
    mm.soft_empty_cache()


def device_budget(device: torch.device) -> int | None:
    """Bytes of weights ComfyUI can hold on `device` (its total less what it reserves); None for the CPU."""
    if device.type == "cpu":
        return None
    return mm.get_total_memory(device) - mm.extra_reserved_memory() - mm.minimum_inference_memory()


def reward_model_part(rm: Any) -> Part | None:
    """The reward model as a Part of the device budget: room for its two largest layers when its weights
    stream; None for a remote reward model (its memory is elsewhere)."""
    patcher = getattr(rm, "comfy_patcher", None)
    if patcher is None:
        return None
    sizes = [mm.module_size(m) for m in patcher.model.modules() if hasattr(m, "comfy_cast_weights")]
    streamed = sum(sorted(sizes)[-2:]) if sizes else patcher.model_size()
    return Part("the reward model", patcher.model_size(), min(streamed, patcher.model_size()))


def check_models_fit(model: Any, model_name: str, reward_model: Any, what: str) -> None:
    """Refuse up front when a fully loaded copy of the MODEL and the reward model (streaming) cannot share the
    MODEL's device within what ComfyUI reports; nothing is checked on the CPU."""
    device = model.load_device
    budget = device_budget(device)
    if budget is None:
        return
    parts = [Part(model_name, model.model_size(), model.model_size())]
    reward = reward_model_part(reward_model)
    if reward is not None and reward_model.comfy_patcher.load_device == device:
        parts.append(reward)
    check_fits(parts, budget, str(device), what)
