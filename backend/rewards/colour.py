"""A visible, differentiable image statistic used as a reward by tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .protocol import Reward


@dataclass
class ColourReward(Reward):
    """Mean of one colour channel minus the mean of the others: a visible, differentiable preference."""

    channel: int = 0  # 0 red, 1 green, 2 blue
    differentiable: bool = True

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Rewards [B] in [-1, 1]."""
        others = [c for c in range(3) if c != self.channel]
        flat = images.reshape(images.shape[0], -1, 3)  # images [B, H, W, 3] or videos [B, T, H, W, 3]
        return flat[..., self.channel].mean(dim=1) - flat[..., others].mean(dim=(1, 2))
