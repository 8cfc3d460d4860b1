"""Gradients for ComfyUI's fused RoPE ops (comfy_kitchen), so the LoRA trainer can backpropagate through models
that use them (Wan, Flux, Qwen-Image, ...).

comfy_kitchen defines `torch.ops.comfy_kitchen.apply_rope1` and friends as custom ops without a backward
("no autograd formula was registered"). `enable_rope_gradients` registers one for each op that lacks it: the
backward recomputes the op with comfy_kitchen's own pure-PyTorch version and differentiates that. The forward
(and so inference) is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# Out-of-place rotary ops a diffusion model calls in its forward (the in-place `_` variants are inference-only).
ROPE_OPS = ("apply_rope1", "apply_rope", "apply_rope_split_half1", "apply_rope_split_half")


def enable_rope_gradients() -> list[str]:
    """Register a backward for each comfy_kitchen RoPE op that has none (idempotent); the ops now registered."""
    try:
        from comfy_kitchen.backends.eager import rope as eager
    except ImportError:  # an older ComfyUI without comfy_kitchen: its RoPE is plain PyTorch
        return []
    done = []
    for name in ROPE_OPS:
        qualname = f"comfy_kitchen::{name}"
        reference = getattr(eager, name, None)
        if reference is None or not hasattr(torch.ops.comfy_kitchen, name) or has_backward(qualname):
            continue
        torch.library.register_autograd(qualname, recomputing_backward(reference), setup_context=save_inputs)
        done.append(name)
    return done


def has_backward(qualname: str) -> bool:
    """Whether the custom op already has an autograd formula (False when torch does not say)."""
    try:
        from torch._library.custom_ops import OPDEFS
    except ImportError:
        return False
    opdef = OPDEFS.get(qualname)
    return opdef is None or getattr(opdef, "_backward_fn", None) is not None


def save_inputs(ctx: Any, inputs: tuple, output: Any) -> None:
    """Keep the op's inputs for the backward's recomputation."""
    ctx.save_for_backward(*inputs)


def recomputing_backward(reference: Callable[..., Any]) -> Callable[..., tuple]:
    """A backward that differentiates `reference` (the op in plain PyTorch) at the saved inputs."""

    def backward(ctx: Any, *grads: torch.Tensor) -> tuple:
        inputs = [t.detach().requires_grad_(need) for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad)]
        wanted = [t for t in inputs if t.requires_grad]
        if not wanted:
            return (None,) * len(inputs)
        with torch.enable_grad():
            outputs = reference(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None]
        found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
        return tuple(next(found) if t.requires_grad else None for t in inputs)

    return backward
