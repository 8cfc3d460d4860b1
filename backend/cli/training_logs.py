"""Where the trainers' log messages (skipped updates, reward-collapse warnings) go on the command line."""

from __future__ import annotations

import logging
import sys


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
