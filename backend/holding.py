"""Holding a reward model for a whole operation: a local `RewardModel` is taken once (its lock and host
hooks such as ComfyUI loading it onto the GPU); a remote `RewardClient` needs nothing."""

from __future__ import annotations

import contextlib
from typing import Any


def holding(reward_model: Any) -> contextlib.AbstractContextManager:
    """The model's own exclusive-use context (`use()`) when it has one, else a no-op context."""
    use = getattr(reward_model, "use", None)
    return use() if use is not None else contextlib.nullcontext()
