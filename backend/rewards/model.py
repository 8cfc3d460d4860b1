"""A reward model as a reward: P("yes") for a prompt, P(beats a reference) for pairwise rewards, or each image's
win rate against the rest of its group (Pref-GRPO)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..media import video_from_frames
from ..ranking import symmetric_win_rates
from .protocol import Reward


@dataclass
class ModelReward(Reward):
    """P("yes") of a RewardModel for a prompt (pointwise), or P(beats `reference`) when one is given."""

    model: Any
    prompt: str
    reference: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    differentiable: bool = True
    fps: float = 16.0  # frame rate of video candidates [B, T, H, W, 3] (the reward model samples frames by time)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Rewards [B]; differentiable when `images` requires grad and gradients are enabled."""
        needs_grad = torch.is_grad_enabled() and images.requires_grad
        if images.ndim == 5:
            images = [video_from_frames(v, self.fps) for v in images]
        if self.reference is not None and needs_grad:
            return self.model.compare_reward(images, self.reference, self.prompt, **self.options)
        if self.reference is not None:
            return torch.tensor(self.model.compare(images, self.reference, self.prompt, **self.options).scores)
        if needs_grad:
            return self.model.reward(images, self.prompt, **self.options)
        return torch.tensor(self.model.score(images, self.prompt, **self.options).scores)


@dataclass
class GroupWinRate(Reward):
    """Each image's mean P(beats another image of the batch) over a round-robin tournament of the batch, both
    orders of every pair averaged (`ranking.symmetric_win_rates`; Pref-GRPO's pairwise reward: a GRPO group
    judged against itself, no reference).

    Relative by construction: a batch's rewards always average 0.5, so it ranks a group and cannot measure
    progress across groups. `model` is a RewardModel or a RewardClient (both have `tournament`)."""

    model: Any
    prompt: str
    options: dict[str, Any] = field(default_factory=dict)
    differentiable: bool = False
    fps: float = 16.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Win rates [B] (0.5 for a batch of one)."""
        if images.shape[0] < 2:
            return torch.full((images.shape[0],), 0.5)
        visuals = [video_from_frames(v, self.fps) for v in images] if images.ndim == 5 else images.detach().cpu()
        result = self.model.tournament(visuals, self.prompt, **self.options)
        return torch.tensor(symmetric_win_rates(result.matrix)[0], dtype=torch.float32)
