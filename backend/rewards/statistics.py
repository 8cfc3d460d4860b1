"""Visible, differentiable image properties as rewards: the "gold judges" of the steering benchmark.

Each is a plain function of pixels in [0, 1], scaled so that 0.5 is neutral (the range stays within [0, 1],
warm_natural's within [-0.5, 1]):

- warmth: 0.5 + (mean red - mean blue) / 2 (a warm, orange-red cast scores high; a cold blue one low);
- centre_brightness: 0.5 + (mean luminance of the central half-size square - that of the border) / 2;
- symmetry: 1 - mean |image - its left-right mirror| (1 for a mirror-symmetric image);
- warm_natural: warmth minus half the blown-out share (how far pixel values reach into the last 5% of the
  range at either end, 0 for none, 1 for all at 0 or 1): warm, but not garish. The generator's own samples
  almost never blow out, so pairs labelled by it teach mostly warmth: a reward model trained on them has no
  reason to mind blown-out colour, and pushing it hard is where over-optimisation is expected (Gao et al.).

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


def blown_out(images: torch.Tensor) -> torch.Tensor:
    """Mean over pixel values of how far they reach into the last 5% of [0, 1] at either end, in [0, 1], per image."""
    excess = ((2 * images - 1).abs() - 0.9).clamp_min(0) / 0.1
    return excess.reshape(images.shape[0], -1).mean(dim=1)


def warm_natural(images: torch.Tensor) -> torch.Tensor:
    """warmth - blown_out / 2, per image [B]."""
    return warmth(images) - blown_out(images) / 2


STATISTICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "warmth": warmth,
    "centre_brightness": centre_brightness,
    "symmetry": symmetry,
    "warm_natural": warm_natural,
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
