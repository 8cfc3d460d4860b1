"""Visible, differentiable image properties as rewards: the "gold judges" of the steering benchmark.

Each is a plain function of pixels in [0, 1], scaled so that 0.5 is neutral and the range stays in [0, 1]:

- warmth: 0.5 + (mean red - mean blue) / 2 (a warm, orange-red cast scores high; a cold blue one low);
- centre_brightness: 0.5 + (mean luminance of the central half-size square - that of the border) / 2;
- symmetry: 1 - mean |image - its left-right mirror| (1 for a mirror-symmetric image).

In `bench/steer_bench.py` one of them plays the hidden "human taste": reward models are trained on pairs it
labelled and then steer the generator, and the judge itself measures whether the images really improved
(the gold gain) while the trained reward model measures what was optimised (the proxy gain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .protocol import Reward


def warmth(images: torch.Tensor) -> torch.Tensor:
    """0.5 + (mean red - mean blue) / 2, per image [B]."""
    flat = images.reshape(images.shape[0], -1, 3)
    return 0.5 + (flat[..., 0].mean(dim=1) - flat[..., 2].mean(dim=1)) / 2


def centre_brightness(images: torch.Tensor) -> torch.Tensor:
    """0.5 + (luminance of the central half-size square - luminance of the rest) / 2, per image [B]."""
    frames = images.reshape(-1, *images.shape[-3:])  # videos: every frame
    luma = frames @ torch.tensor([0.299, 0.587, 0.114], dtype=frames.dtype, device=frames.device)
    h, w = luma.shape[1:]
    mask = torch.zeros(h, w, dtype=torch.bool, device=luma.device)
    mask[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
    centre = luma[:, mask].mean(dim=1)
    border = luma[:, ~mask].mean(dim=1)
    return (0.5 + (centre - border) / 2).reshape(images.shape[0], -1).mean(dim=1)


def symmetry(images: torch.Tensor) -> torch.Tensor:
    """1 - mean |image - its left-right mirror|, per image [B]."""
    mirrored = images.flip(-2)  # the width axis of [B, H, W, 3] and [B, T, H, W, 3]
    return 1 - (images - mirrored).abs().reshape(images.shape[0], -1).mean(dim=1)


STATISTICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "warmth": warmth,
    "centre_brightness": centre_brightness,
    "symmetry": symmetry,
}


@dataclass
class ImageStatistic(Reward):
    """One of `STATISTICS` as a differentiable reward."""

    name: str = "warmth"
    differentiable: bool = True

    def __post_init__(self) -> None:
        if self.name not in STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {self.name!r}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Rewards [B] in [0, 1]."""
        return STATISTICS[self.name](images)
