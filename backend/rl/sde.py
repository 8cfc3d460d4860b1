"""Flow-GRPO's SDE sampler for flow models: the same marginals as the Euler ODE, with Gaussian steps whose
log-probabilities the policy gradient needs.

At sigma with step dt = sigma_next - sigma < 0, velocity v = (x - x0_hat) / sigma and eps_hat = x + (1 - sigma) v:
    std  = a * sqrt(sigma / (1 - sigma))        (sigma = 1 is replaced by the second sigma of the schedule)
    mean = x + dt * (v + std^2 / (2 sigma) * eps_hat)
    x'   = mean + std * sqrt(-dt) * z
log p(x' | x) is the Gaussian log-density of x' around mean with scale std * sqrt(-dt), averaged over the
dimensions of one sample (Flow-GRPO's reference code averages; the sum would scale every ratio's log by the
latent size). All of it in fp32. With a = 0 the mean is exactly the Euler step and x' = mean.
"""

from __future__ import annotations

import math

import torch

from ..generators.protocol import Generator


def sigma_cap(sigmas: torch.Tensor) -> torch.Tensor:
    """What stands in for sigma = 1 in the noise scale: the schedule's second sigma (half the first for one step)."""
    return sigmas[1] if len(sigmas) > 2 else sigmas[0] * 0.5


def sde_std(sigma: torch.Tensor, sigma_cap: torch.Tensor, noise_level: float) -> torch.Tensor:
    """The per-step noise scale a * sqrt(sigma / (1 - sigma)), with sigma = 1 replaced by `sigma_cap`."""
    s = torch.where(sigma >= 1, sigma_cap, sigma)
    return noise_level * torch.sqrt(s / (1 - s))


def step_scale(
    sigma: torch.Tensor, sigma_next: torch.Tensor, sigma_cap: torch.Tensor, noise_level: float
) -> torch.Tensor:
    """The standard deviation of one SDE step's Gaussian: std * sqrt(-dt)."""
    return sde_std(sigma, sigma_cap, noise_level) * torch.sqrt(sigma - sigma_next)


def sde_mean(
    x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """The mean of the next state; with std = 0 it is the Euler step x + d * dt bit for bit."""
    d = (x - x0) / sigma  # the velocity, computed exactly as the Euler sampler does
    eps_hat = x + (1 - sigma) * d
    return x + (d + std**2 / (2 * sigma) * eps_hat) * (sigma_next - sigma)


def gaussian_log_prob(x_next: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean over a sample's dimensions of log N(x_next; mean, scale^2); one value per sample."""
    dims = tuple(range(1, x_next.ndim))
    scale = scale.clamp_min(1e-12)
    logp = -((x_next.detach() - mean) ** 2) / (2 * scale**2) - torch.log(scale) - 0.5 * math.log(2 * math.pi)
    return logp.mean(dim=dims)


def transition_kl(mean: torch.Tensor, mean_ref: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL between two Gaussian steps of the same scale, |mean - mean_ref|^2 / (2 scale^2), averaged over a
    sample's dimensions; one value per sample."""
    dims = tuple(range(1, mean.ndim))
    return ((mean - mean_ref) ** 2).mean(dim=dims) / (2 * scale**2)


def sde_step(
    generator: Generator,
    x: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    sigma_cap: torch.Tensor,
    noise_level: float,
    noise: torch.Tensor | None = None,
    x_next: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SDE step: (x_next, its log-prob [B], the mean). Given `x_next`, only scores that transition."""
    x = x.float()
    x0 = generator.denoise(x, sigma).float()
    std = sde_std(sigma, sigma_cap, noise_level)
    mean = sde_mean(x, x0, sigma, sigma_next, std)
    scale = step_scale(sigma, sigma_next, sigma_cap, noise_level)
    if x_next is None:
        x_next = mean + scale * noise if noise_level > 0 else mean
    if noise_level <= 0:
        return x_next, torch.zeros(x.shape[0], device=x.device), mean
    return x_next, gaussian_log_prob(x_next, mean, scale), mean
