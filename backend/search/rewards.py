"""Rewards a search maximises: a reward model (pointwise, or pairwise against a reference), a weighted
ensemble, or a simple differentiable image statistic (for tests and benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class Reward(Protocol):
    """Scores images [B, H, W, 3] in [0, 1]; `differentiable` rewards keep the autograd graph."""

    differentiable: bool

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Rewards [B] (higher is better)."""


@dataclass
class ModelReward:
    """P("yes") of a RewardModel for a prompt (pointwise), or P(beats `reference`) when one is given."""

    model: Any
    prompt: str
    reference: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    differentiable: bool = True

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.reference is not None:
            return torch.tensor(self.model.compare(images, self.reference, self.prompt, **self.options).scores)
        if torch.is_grad_enabled() and images.requires_grad:
            return self.model.reward(images, self.prompt, **self.options)
        return torch.tensor(self.model.score(images, self.prompt, **self.options).scores)


@dataclass
class Ensemble:
    """A weighted sum of rewards (weights default to 1)."""

    rewards: list[Any]
    weights: list[float] | None = None

    @property
    def differentiable(self) -> bool:
        return all(r.differentiable for r in self.rewards)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        weights = self.weights or [1.0] * len(self.rewards)
        if len(weights) != len(self.rewards):
            raise ValueError(f"weights: got {len(weights)} weights for {len(self.rewards)} rewards")
        return sum(w * r(images).to(images.device) for w, r in zip(weights, self.rewards))


@dataclass
class ColourReward:
    """Mean of one colour channel minus the mean of the others: a visible, differentiable preference."""

    channel: int = 0  # 0 red, 1 green, 2 blue
    differentiable: bool = True

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        others = [c for c in range(3) if c != self.channel]
        return images[..., self.channel].mean(dim=(1, 2)) - images[..., others].mean(dim=(1, 2, 3))
