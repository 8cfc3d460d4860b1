"""Rewards made of other rewards: a monotone transform of one, a weighted sum of several."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .protocol import Reward

TRANSFORMS = ("none", "logit", "log")


@dataclass
class Transformed(Reward):
    """A reward passed through a monotone transform of P: "logit" log(p / (1 - p)) or "log" log p (the
    log-sigmoid family of "Transforming and Combining Rewards": diminishing returns near p = 1 for "log")."""

    reward: Reward
    transform: str = "none"

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"reward transform must be one of {', '.join(TRANSFORMS)}, got {self.transform!r}")

    @property
    def differentiable(self) -> bool:
        """As differentiable as the inner reward."""
        return self.reward.differentiable

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The transformed rewards [B]."""
        p = self.reward(images)
        if self.transform == "none":
            return p
        p = p.clamp(1e-6, 1 - 1e-6)
        return torch.log(p / (1 - p)) if self.transform == "logit" else torch.log(p)


@dataclass
class Ensemble(Reward):
    """A weighted sum of rewards (weights default to 1)."""

    rewards: list[Reward]
    weights: list[float] | None = None

    @property
    def differentiable(self) -> bool:
        """Differentiable when every part is."""
        return all(r.differentiable for r in self.rewards)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The weighted sum [B]."""
        weights = self.weights or [1.0] * len(self.rewards)
        if len(weights) != len(self.rewards):
            raise ValueError(f"weights: got {len(weights)} weights for {len(self.rewards)} rewards")
        return sum(w * r(images).to(images.device) for w, r in zip(weights, self.rewards))
