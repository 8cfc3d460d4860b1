"""ComfyUI progress bar + interrupt check as the engine's `progress(done, total)` callback."""

from __future__ import annotations

from collections.abc import Callable

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
