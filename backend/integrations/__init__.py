"""Front doors for outside training code: Flow-GRPO-style reward functions (`reward_functions`) over this
project's engine, with their inputs checked in `inputs`. Also importable as `rewarddance.integrations`."""

from __future__ import annotations

from .reward_functions import (
    RewardFunction,
    WinRateFunction,
    reward_function,
    symmetric_win_rates,
    win_rate_reward,
)

__all__ = ["RewardFunction", "WinRateFunction", "reward_function", "win_rate_reward", "symmetric_win_rates"]
