"""A tiny pixel-space flow-matching generator for tests and benchmarks: trains and samples on a CPU in seconds.

The "latent" is a small RGB image in [-1, 1] (default 3 x 16 x 16); decoding maps it to [0, 1]. The
velocity network is a few convolutions conditioned on sigma. `train_tiny_flow` fits it to crops of
scikit-image's sample photos (or any [N, 3, h, w] data) with the rectified-flow loss. `tiny_checkpoint.py`
saves one as a directory (`rewarddance tiny-generator`) that every pipeline loader accepts by path.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TinyVelocityNet(nn.Module):
    """v_theta(x, sigma): convolutions with a sigma embedding added to every block."""

    def __init__(self, channels: int = 3, width: int = 32):
        super().__init__()
        self.channels, self.width = channels, width  # recorded in saved checkpoints (tiny_checkpoint.py)
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(3))
        self.embed = nn.Linear(16, width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(torch.linspace(0, math.log(100.0), 8, device=x.device))
        angles = sigma.view(-1, 1) * freqs
        emb = self.embed(torch.cat([angles.sin(), angles.cos()], dim=1))[:, :, None, None]
        h = torch.nn.functional.silu(self.inp(x))
        for block in self.blocks:
            h = h + torch.nn.functional.silu(block(h) + emb)
        return self.out(h)


class TinyFlowGenerator:
    """The generator protocol over a TinyVelocityNet (flow parameterization, uniform sigmas 1 -> 0)."""

    parameterization = "flow"

    def __init__(self, net: TinyVelocityNet | None = None, size: int = 16, device: str = "cpu", seed: int = 0):
        torch.manual_seed(seed)
        self.net = (net or TinyVelocityNet()).to(device).eval()
        self.noise_shape = (self.net.channels, size, size)
        self.device = torch.device(device)

    def sigmas(self, steps: int) -> torch.Tensor:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        return torch.linspace(1.0, 0.0, steps + 1, device=self.device)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma_b = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        v = self.net(x, sigma_b)
        return x - sigma_b.view(-1, 1, 1, 1) * v  # x0_hat = x - sigma * v

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)


def photo_crops(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """[n, 3, size, size] crops of scikit-image's sample photos scaled to [-1, 1]."""
    from ..sample_photos import sample_photos

    gen = torch.Generator().manual_seed(seed)
    photos = [torch.from_numpy(p).permute(2, 0, 1).float() / 127.5 - 1 for p in sample_photos()]
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        side = int(min(p.shape[1:]) * (0.2 + 0.6 * torch.rand(1, generator=gen).item()))
        top = int(torch.randint(0, p.shape[1] - side + 1, (1,), generator=gen))
        left = int(torch.randint(0, p.shape[2] - side + 1, (1,), generator=gen))
        crop = p[:, top : top + side, left : left + side][None]
        out.append(torch.nn.functional.interpolate(crop, size=(size, size), mode="area")[0])
    return torch.stack(out)


def train_tiny_flow(
    steps: int = 300,
    size: int = 16,
    batch: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    data: torch.Tensor | None = None,
    width: int = 32,
) -> TinyFlowGenerator:
    """Fit a TinyFlowGenerator (a TinyVelocityNet of `width` channels) with the rectified-flow loss |v - (eps - x0)|^2
    (seconds on a CPU)."""
    torch.manual_seed(seed)
    data = photo_crops(1024, size, seed) if data is None else data
    net = TinyVelocityNet(channels=data.shape[1], width=width)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x0 = data[torch.randint(0, len(data), (batch,), generator=gen)]
        eps = torch.randn(x0.shape, generator=gen)
        sigma = torch.rand(batch, generator=gen)
        x = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * eps
        loss = ((net(x, sigma) - (eps - x0)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return TinyFlowGenerator(net, size)
