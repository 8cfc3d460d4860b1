"""The reward contract: what a noise search maximises and an RL trainer trains towards."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

import torch


class Reward(Protocol):
    """Scores images [B, H, W, 3] (or videos [B, T, H, W, 3]) in [0, 1]; `differentiable` rewards keep the
    autograd graph. Subclasses inherit `submit`, which scores at once; a remote reward overrides it to score
    in the background."""

    differentiable: bool

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Rewards [B] (higher is better)."""

    def submit(self, images: torch.Tensor) -> Future:
        """A future of the rewards of `images` as float32 on the CPU (computed here, without gradient)."""
        done: Future = Future()
        with torch.no_grad():
            done.set_result(self(images).float().cpu())
        return done


class CallableReward(Reward):
    """A plain reward callable (images -> [B] rewards, optionally with a `differentiable` flag) as a `Reward`."""

    def __init__(self, fn: object):
        self.fn = fn
        self.differentiable = bool(getattr(fn, "differentiable", False))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The wrapped callable's rewards."""
        return self.fn(images)


def as_reward(reward: object) -> Reward:
    """`reward` itself when it derives from `Reward`, else the callable wrapped as one (inheriting `submit`)."""
    return reward if Reward in type(reward).__mro__ else CallableReward(reward)
