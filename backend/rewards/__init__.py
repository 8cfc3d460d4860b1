"""Reward callables typed by one protocol (`protocol.Reward`): a reward model pointwise or pairwise
(`model.py`), a `rewarddance serve` backend (`remote.py`), an ensemble or a monotone transform of others
(`combine.py`), a group's round-robin win rates (`model.py`, Pref-GRPO), differentiable image statistics
for tests and benchmarks (`colour.py`, `statistics.py`: the steering benchmark's gold judges), and a user's
Python function as a judge (`python_judge.py`).
Noise search and the RL trainers both take a `Reward`."""

from __future__ import annotations

from .colour import ColourReward
from .combine import COMBINES, TRANSFORMS, Ensemble, Transformed
from .model import GroupWinRate, ModelReward
from .protocol import Reward, as_reward
from .python_judge import PythonJudge, load_judge
from .remote import RemoteReward
from .statistics import STATISTICS, ImageStatistic

__all__ = [
    "Reward",
    "as_reward",
    "ModelReward",
    "GroupWinRate",
    "RemoteReward",
    "Ensemble",
    "Transformed",
    "TRANSFORMS",
    "COMBINES",
    "ColourReward",
    "ImageStatistic",
    "STATISTICS",
    "PythonJudge",
    "load_judge",
]
