"""The ODE samplers (backend/generators/sampling.py) against the exact probability-flow solution of a Gaussian data
distribution, whose denoiser and ODE are known in closed form, for flow and eps parameterisations."""

from __future__ import annotations

import math

import pytest
import torch

from rewarddance.backend.generators.sampling import ODE_SAMPLERS, CallCounter, sample_dpmpp_2m, sample_heun

DATA_STD = 0.5  # x0 ~ N(0, DATA_STD^2) per element


class GaussianGenerator:
    """A generator whose data is N(0, s^2): its exact denoiser E[x0 | x_sigma] and ODE solution are closed forms."""

    noise_shape = (3, 4, 4)
    device = torch.device("cpu")

    def __init__(self, parameterization: str):
        self.parameterization = parameterization

    def alpha(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1 - sigma if self.parameterization == "flow" else torch.ones_like(sigma)

    def sigmas(self, steps: int) -> torch.Tensor:
        if self.parameterization == "flow":
            return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        rho, hi, lo = 7.0, 14.6, 0.03  # Karras et al.'s schedule, then 0
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        return torch.cat([sig, torch.zeros(1, dtype=torch.float64)])

    def variance(self, sigma: torch.Tensor) -> torch.Tensor:
        """Var of x_sigma = alpha x0 + sigma eps."""
        return self.alpha(sigma) ** 2 * DATA_STD**2 + sigma**2

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        return self.alpha(sigma) * DATA_STD**2 / self.variance(sigma) * x

    def exact(self, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """Where the probability-flow ODE takes the initial latent at sigma_max: x0 = x * s / sqrt(Var)."""
        sigma_max = self.sigmas(steps)[0]
        return sigma_max * noise * DATA_STD / self.variance(sigma_max).sqrt()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


def _error(gen: GaussianGenerator, sampler, steps: int) -> float:
    """Mean absolute distance of 64 samples from the exact ODE solution."""
    noise = torch.randn((64, *gen.noise_shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return float((sampler(gen, noise, steps) - gen.exact(noise, steps)).abs().mean())


# the steps where the order is read: eps' schedule ends at sigma 0.03, whose jump to 0 floors the error near 6e-4
@pytest.mark.parametrize("parameterization, order_steps", [("flow", (32, 64, 128)), ("eps", (8, 16, 32))])
def test_higher_order_samplers_beat_euler_and_converge_at_second_order(parameterization, order_steps):
    gen = GaussianGenerator(parameterization)
    euler = [_error(gen, ODE_SAMPLERS["euler"], n) for n in (16, 32)]
    assert math.log2(euler[0] / euler[1]) < 1.3  # Euler is first order
    for name in ("heun", "dpmpp_2m"):
        assert _error(gen, ODE_SAMPLERS[name], 16) < euler[0] / 3, name
        errors = [_error(gen, ODE_SAMPLERS[name], n) for n in order_steps]
        assert math.log2(errors[1] / errors[2]) > 1.6, (name, errors)  # halving the step: ~4x at second order


def test_call_counts():
    gen = GaussianGenerator("flow")
    noise = torch.zeros((2, *gen.noise_shape), dtype=torch.float64)
    heun, dpm = CallCounter(), CallCounter()
    sample_heun(gen, noise, 5, heun)
    sample_dpmpp_2m(gen, noise, 5, dpm)
    assert heun.denoiser == 2 * (2 * 5 - 1) and dpm.denoiser == 2 * 5  # per sample: 2 steps - 1, and steps
