"""What `train` and `train-rm` share on the command line: trainer log messages on stderr, the device of each
process under `accelerate launch`, and a run under a progress bar that every process finishes together."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any


class StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever sys.stderr is at the time of each message."""

    @property
    def stream(self):  # type: ignore[override]
        """The current sys.stderr."""
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def log_training_to_stderr() -> None:
    """Show the `rewarddance.train` logger's messages on stderr (once, however often it is called)."""
    logger = logging.getLogger("rewarddance.train")
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def process_device(accelerate: bool) -> str | None:
    """This process's device under `accelerate launch` (joining its process group), else None."""
    from ..runs import accelerate_device

    return accelerate_device() if accelerate else None


def run_with_progress(
    train: Callable[[Callable[[int, int, dict], None]], dict[str, Any]],
    total: int,
    desc: str,
    postfix: Callable[[dict], dict[str, str]],
    quiet: bool,
) -> dict[str, Any] | None:
    """Run `train(progress)` under a tqdm bar (main process only); None in the other processes."""
    from tqdm import tqdm

    from ..runs import distributed, end_processes

    main_process = distributed()[0] == 0
    with tqdm(total=total, desc=desc, unit="step", disable=quiet or not main_process) as bar:

        def progress(step: int, steps: int, row: dict) -> None:
            bar.n = step
            bar.set_postfix(postfix(row), refresh=False)
            bar.refresh()

        summary = train(progress)
    end_processes()  # under accelerate: every process finishes before any leaves
    return summary if main_process else None
