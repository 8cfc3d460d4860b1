"""Deprecated location of the reward callables (one release): they live in `rewarddance.backend.rewards`."""

from __future__ import annotations

import warnings

from ..rewards import ColourReward, Ensemble, ModelReward, RemoteReward, Reward, Transformed

__all__ = ["ColourReward", "Ensemble", "ModelReward", "RemoteReward", "Reward", "Transformed"]

warnings.warn(
    "rewarddance.backend.search.rewards is deprecated and will be removed in the next release; "
    "import from rewarddance.backend.rewards",
    DeprecationWarning,
    stacklevel=2,
)
