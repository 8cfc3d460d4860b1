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


COMBINES = ("sum", "min")


@dataclass
class Ensemble(Reward):
    """Several rewards as one: their weighted sum (weights default to 1; give 1/n each for the mean), or with
    `combine="min"` the worst case, each image scored by the reward that likes it least (a conservative
    ensemble against reward hacking: an image must fool every member)."""

    rewards: list[Reward]
    weights: list[float] | None = None
    combine: str = "sum"

    def __post_init__(self) -> None:
        if self.combine not in COMBINES:
            raise ValueError(f"reward combine must be one of {', '.join(COMBINES)}, got {self.combine!r}")
        if self.combine == "min" and self.weights is not None:
            raise ValueError("reward weights apply to combine='sum'; the worst-case ensemble ('min') takes none")

    @property
    def differentiable(self) -> bool:
        """Differentiable when every part is."""
        return all(r.differentiable for r in self.rewards)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The weighted sum (or the minimum) [B]."""
        if self.combine == "min":
            return torch.stack([r(images).to(images.device) for r in self.rewards]).min(dim=0).values
        weights = self.weights or [1.0] * len(self.rewards)
        if len(weights) != len(self.rewards):
            raise ValueError(f"weights: got {len(weights)} weights for {len(self.rewards)} rewards")
        return sum(w * r(images).to(images.device) for w, r in zip(weights, self.rewards))
