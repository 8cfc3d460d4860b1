"""Rewards a search maximises: a reward model (pointwise, or pairwise against a reference), a weighted
ensemble, or a simple differentiable image statistic (for tests and benchmarks)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..media import video_from_frames


class Reward(Protocol):
    """Scores images [B, H, W, 3] (or videos [B, T, H, W, 3]) in [0, 1]; `differentiable` rewards keep the autograd graph."""

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
    fps: float = 16.0  # frame rate of video candidates [B, T, H, W, 3] (the reward model samples frames by time)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
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
class RemoteReward:
    """P("yes") (or P(beats `reference`)) from a `rewarddance serve` backend; `submit` scores in a background
    thread so a trainer keeps sampling while the server scores (not differentiable)."""

    client: Any  # a RewardClient
    prompt: str
    reference: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    fps: float = 16.0
    differentiable: bool = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        visuals = (
            [video_from_frames(v, self.fps) for v in images] if images.ndim == 5 else images.detach().float().cpu()
        )
        if self.reference is not None:
            return torch.tensor(self.client.compare(visuals, self.reference, self.prompt, **self.options).scores)
        return torch.tensor(self.client.score(visuals, self.prompt, **self.options).scores)

    def submit(self, images: torch.Tensor) -> Future:
        """Start scoring `images` on the server; the future's result is what __call__ returns."""
        return _remote_pool().submit(self, images.detach().cpu())


_POOL: list[ThreadPoolExecutor] = []


def _remote_pool() -> ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=4, thread_name_prefix="rewarddance-remote-reward"))
    return _POOL[0]


def score_later(reward: Any, images: torch.Tensor) -> Future:
    """A future of reward(images): remote rewards score in the background, local ones at once."""
    if hasattr(reward, "submit"):
        return reward.submit(images)
    done: Future = Future()
    with torch.no_grad():
        done.set_result(reward(images).float().cpu())
    return done


TRANSFORMS = ("none", "logit", "log")


@dataclass
class Transformed:
    """A reward passed through a monotone transform of P: "logit" log(p / (1 - p)) or "log" log p (the
    log-sigmoid family of "Transforming and Combining Rewards": diminishing returns near p = 1 for "log")."""

    reward: Any
    transform: str = "none"

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"reward transform must be one of {', '.join(TRANSFORMS)}, got {self.transform!r}")

    @property
    def differentiable(self) -> bool:
        return self.reward.differentiable

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        p = self.reward(images)
        if self.transform == "none":
            return p
        p = p.clamp(1e-6, 1 - 1e-6)
        return torch.log(p / (1 - p)) if self.transform == "logit" else torch.log(p)


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
        flat = images.reshape(images.shape[0], -1, 3)  # images [B, H, W, 3] or videos [B, T, H, W, 3]
        return flat[..., self.channel].mean(dim=1) - flat[..., others].mean(dim=(1, 2))
