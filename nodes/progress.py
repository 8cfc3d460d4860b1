"""ComfyUI progress bar + interrupt check as the engine's `progress(done, total)` callback, and holding a
reward model for a whole node run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import comfy.model_management as mm
import comfy.utils


def progress_for(total: int) -> Callable[[int, int], None]:
    """A callback that advances ComfyUI's progress bar and stops when the user interrupts."""
    bar = comfy.utils.ProgressBar(total)
    mm.throw_exception_if_processing_interrupted()

    def update(done: int, total_: int) -> None:
        bar.update_absolute(done, total_)
        mm.throw_exception_if_processing_interrupted()

    return update


def holding(reward_model: Any) -> Any:
    """Hold a local reward model for the whole node (loaded once, unloaded once); remote models need nothing."""
    use = getattr(reward_model, "use", None)
    return use() if use is not None else contextlib.nullcontext()
