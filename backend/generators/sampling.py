"""ODE samplers over the generator protocol (Euler, Heun, DPM-Solver++(2M)), with a counter of denoiser calls (the
search budget unit). Euler is what search and the likelihood trainers use (it replays in ComfyUI's euler); the
others are for trainers that only need clean samples (nft's `nft_sampler`)."""

from __future__ import annotations

from collections.abc import Callable
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


def sample_heun(
    generator: Generator, noise: torch.Tensor, steps: int, counter: CallCounter | None = None
) -> torch.Tensor:
    """Heun's second-order ODE sampler (k-diffusion's form: Euler on the last step to sigma 0), 2 steps - 1 calls."""
    sigmas = generator.sigmas(steps).to(noise.device)
    x = initial_latent(generator, noise, sigmas[0])
    for i in range(steps):
        guess, x0 = euler_step(generator, x, sigmas[i], sigmas[i + 1], counter)
        if sigmas[i + 1] == 0:
            x = guess
            continue
        d = (x - x0) / sigmas[i]
        d_next = (guess - generator.denoise(guess, sigmas[i + 1])) / sigmas[i + 1]
        if counter is not None:
            counter.denoiser += x.shape[0]
        x = x + (d + d_next) / 2 * (sigmas[i + 1] - sigmas[i])
    return x


def sample_dpmpp_2m(
    generator: Generator, noise: torch.Tensor, steps: int, counter: CallCounter | None = None
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep in the data prediction, one call per step; first order on the first
    step and on the last (to sigma 0, where it returns the last prediction)."""
    sigmas = generator.sigmas(steps).to(noise.device)
    x = initial_latent(generator, noise, sigmas[0])
    previous: tuple[torch.Tensor, torch.Tensor] | None = None  # (x0 at the previous step, its step's h)
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = generator.denoise(x, sigma)
        if counter is not None:
            counter.denoiser += x.shape[0]
        if sigma_next == 0:
            return x0
        h = _log_snr(generator, sigma_next) - _log_snr(generator, sigma)
        target = x0
        if previous is not None:
            x0_prev, h_prev = previous
            r = h_prev / h
            target = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
        x = (sigma_next / sigma) * x - _alpha(generator, sigma_next) * torch.expm1(-h) * target
        previous = (x0, h)
    return x


def _alpha(generator: Generator, sigma: torch.Tensor) -> torch.Tensor:
    """The signal scale of x_sigma = alpha x0 + sigma eps: 1 - sigma for flow models, 1 for eps (VE form)."""
    return 1 - sigma if generator.parameterization == "flow" else torch.ones_like(sigma)


def _log_snr(generator: Generator, sigma: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha / sigma), the solver's time variable."""
    return torch.log(_alpha(generator, sigma) / sigma)


ODE_SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}  # (generator, unit noise, steps) -> clean latents
