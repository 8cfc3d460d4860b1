"""The generator protocol: the few things a search or a trainer needs from any denoiser.

A generator works in the k-diffusion convention shared by ComfyUI and most samplers:
- `parameterization` "flow" (SD3, Flux, Wan: x_sigma = (1 - sigma) x0 + sigma eps, sigma in [0, 1]) or
  "eps" (SD1.5/SDXL: x_sigma = x0 + sigma eps, sigma up to ~14.6);
- `sigmas(steps)`: the descending schedule, ending at 0;
- `denoise(x, sigma)`: one model evaluation returning the denoised estimate x0_hat (guidance included);
- `decode(latents)`: latents -> images [B, H, W, 3] in [0, 1], differentiable;
- `noise_shape`: the shape of one initial noise (C, h, w) or (C, T, h, w) for video.
Whatever the parameterization, d = (x - x0_hat) / sigma is the ODE direction, so one Euler sampler serves all.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

PARAMETERIZATIONS = ("flow", "eps")


@runtime_checkable
class Generator(Protocol):
    """Anything that denoises: a tiny built-in flow model, a diffusers pipeline, a ComfyUI MODEL."""

    parameterization: str
    noise_shape: tuple[int, ...]
    device: torch.device

    def sigmas(self, steps: int) -> torch.Tensor:
        """Descending noise levels [steps + 1], the last one 0."""

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0_hat for a batch x at noise level sigma (a scalar or one per sample)."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images [B, H, W, 3] in [0, 1] (differentiable)."""


def noised(generator: Generator, x0: torch.Tensor, noise: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """x at noise level sigma for clean x0 and unit Gaussian noise, in the generator's parameterization."""
    if generator.parameterization == "flow":
        return (1 - sigma) * x0 + sigma * noise
    if generator.parameterization == "eps":
        return x0 + sigma * noise
    raise ValueError(
        f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, got {generator.parameterization!r}"
    )


def initial_latent(generator: Generator, noise: torch.Tensor, sigma_max: float | torch.Tensor) -> torch.Tensor:
    """The starting latent of sampling from unit noise at sigma_max (x = sigma_max * noise for an empty latent).

    A generator may define `start(noise, sigma_max)` to scale noise its own way (ComfyUI's noise_scaling,
    which also mixes in a non-empty input latent).
    """
    start = getattr(generator, "start", None)
    if start is not None:
        return start(noise, sigma_max)
    return sigma_max * noise


def seeded_noise(generator: Generator, n: int, seed: int) -> torch.Tensor:
    """n unit Gaussian noises from a seed (CPU generator, so results match across devices)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *generator.noise_shape), generator=g).to(generator.device)
