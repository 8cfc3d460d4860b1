"""Reward callables typed by one protocol (`protocol.Reward`): a reward model pointwise or pairwise
(`model.py`), a `rewarddance serve` backend (`remote.py`), an ensemble or a monotone transform of others
(`combine.py`), a differentiable colour statistic for tests and benchmarks (`colour.py`), and a user's Python
function as a judge (`python_judge.py`).
Noise search and the RL trainers both take a `Reward`."""

from __future__ import annotations

from .colour import ColourReward
from .combine import TRANSFORMS, Ensemble, Transformed
from .model import ModelReward
from .protocol import Reward, as_reward
from .python_judge import PythonJudge, load_judge
from .remote import RemoteReward

__all__ = [
    "Reward",
    "as_reward",
    "ModelReward",
    "RemoteReward",
    "Ensemble",
    "Transformed",
    "TRANSFORMS",
    "ColourReward",
    "PythonJudge",
    "load_judge",
]
