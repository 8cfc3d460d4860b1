"""Partial loading for the reward model: ComfyUI may keep some of its weights in RAM and stream them to the GPU
layer by layer (its "lowvram" loading), so a judge and a generator that together exceed VRAM still run, slower,
instead of running out of memory.

ComfyUI streams a module's weights when the module has `comfy_cast_weights` (its own layers do); a transformers
model's layers do not. `make_streamable` gives every module that holds weights that protocol: while ComfyUI has
left the module's weights off the GPU it sets `comfy_cast_weights`, and the module then runs with its weights
copied to the execution device for that call (`torch.func.functional_call`), the stored weights untouched.
Buffers (rotary frequencies and the like) are small: `move_buffers` puts them on the execution device after a
partial load. Nothing here changes a fully loaded model's forward.
"""

from __future__ import annotations

import functools
from typing import Any

import torch


def make_streamable(model: torch.nn.Module, device: torch.device) -> int:
    """Let ComfyUI stream the weights of every module of `model` that holds weights (idempotent); how many."""
    count = 0
    for module in model.modules():
        if not any(True for _ in module.parameters(recurse=False)) or hasattr(module, "comfy_cast_weights"):
            continue
        module.comfy_cast_weights = False  # ComfyUI sets it while the module's weights stay off `device`
        for name in ("weight", "bias"):  # ComfyUI reads both of a streamable module (e.g. RMSNorm has no bias)
            if not hasattr(module, name):
                module.register_parameter(name, None)
        module.weight_function, module.bias_function = [], []  # ComfyUI's weight patches (none for a judge)
        module.forward = functools.partial(streamed_forward, module, module.forward, device)
        count += 1
    return count


def streamed_forward(module: torch.nn.Module, forward: Any, device: torch.device, *args: Any, **kwargs: Any) -> Any:
    """`module`'s forward; while its weights are off `device`, with copies of them on `device` for this call."""
    if not module.comfy_cast_weights or getattr(module, "_rewarddance_streaming", False):
        return forward(*args, **kwargs)
    weights = {name: p.to(device, non_blocking=True) for name, p in module.named_parameters(recurse=False)}
    module._rewarddance_streaming = True  # functional_call calls this forward again: run the module's own
    try:
        return torch.func.functional_call(module, weights, args, kwargs, strict=False)
    finally:
        module._rewarddance_streaming = False


def move_buffers(model: torch.nn.Module, device: torch.device) -> None:
    """Every buffer of `model` on `device` (a partial load moves only the weights of the modules it loads)."""
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def streamed_modules(model: torch.nn.Module) -> int:
    """How many modules of `model` currently run with streamed weights."""
    return sum(1 for m in model.modules() if getattr(m, "comfy_cast_weights", False))
