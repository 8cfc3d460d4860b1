"""Reward functions for outside RL code (Flow-GRPO, DanceGRPO, Pref-GRPO); see docs/integrations.md.

    from rewarddance.integrations import reward_function, win_rate_reward

The code lives in `rewarddance.backend.integrations`; this package is its short public name.
"""

from __future__ import annotations

from ..backend.integrations import (
    RewardFunction,
    WinRateFunction,
    reward_function,
    symmetric_win_rates,
    win_rate_reward,
)

__all__ = ["RewardFunction", "WinRateFunction", "reward_function", "win_rate_reward", "symmetric_win_rates"]
