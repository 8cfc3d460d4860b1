"""A `rewarddance serve` backend as a reward, scored in a background thread while a trainer samples."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from ..media import video_from_frames
from .protocol import Reward


@dataclass
class RemoteReward(Reward):
    """P("yes") (or P(beats `reference`)) from a `rewarddance serve` backend; `submit` scores in a background
    thread so a trainer keeps sampling while the server scores (not differentiable)."""

    client: Any  # a RewardClient
    prompt: str
    reference: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    fps: float = 16.0
    differentiable: bool = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Rewards [B] from the server (no gradient)."""
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
    """The process-wide threads that wait on the server."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=4, thread_name_prefix="rewarddance-remote-reward"))
    return _POOL[0]
