"""Euler sampling over the generator protocol, with a counter of denoiser calls (the search budget unit)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .protocol import Generator, initial_latent


@dataclass
class CallCounter:
    """Denoiser and scorer calls spent (one call = one batched model evaluation per sample)."""

    denoiser: int = 0
    scorer: int = 0


def euler_step(
    generator: Generator,
    x: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    counter: CallCounter | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step from sigma to sigma_next; returns (x_next, x0_hat at sigma).

    Written exactly as k-diffusion's (and ComfyUI's) `sample_euler` step, x + d * dt with d = (x - x0) / sigma,
    also for the last step to sigma 0, so a noise found here replays bit for bit in ComfyUI's euler sampler.
    """
    x0 = generator.denoise(x, sigma)
    if counter is not None:
        counter.denoiser += x.shape[0]
    d = (x - x0) / sigma
    return x + d * (sigma_next - sigma), x0


def sample(
    generator: Generator,
    noise: torch.Tensor,
    steps: int,
    counter: CallCounter | None = None,
    start: int = 0,
    x: torch.Tensor | None = None,
    stop: int | None = None,
) -> torch.Tensor:
    """Euler-sample a batch from its initial noise (or from `x` at step `start`) down to step `stop` (default: sigma 0)."""
    sigmas = generator.sigmas(steps).to(noise.device)
    x = initial_latent(generator, noise, sigmas[0]) if x is None else x
    for i in range(start, steps if stop is None else stop):
        x, _ = euler_step(generator, x, sigmas[i], sigmas[i + 1], counter)
    return x


def trajectory(generator: Generator, noise: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Every state of the Euler (ODE) trajectory from `noise`: [steps + 1] batches, the last one at sigma 0."""
    sigmas = generator.sigmas(steps).to(noise.device)
    states = [initial_latent(generator, noise, sigmas[0])]
    for i in range(steps):
        states.append(euler_step(generator, states[-1], sigmas[i], sigmas[i + 1])[0])
    return states
