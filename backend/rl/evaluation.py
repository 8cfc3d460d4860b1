"""Held-out evaluation of a policy: ODE samples from seeds training never sees, scored by the training reward
and by any number of monitors (rewards that are measured, never optimised: a gold judge, another reward model),
plus the policy's KL to the frozen model along those samples.

The KL is Flow-GRPO's: at each SDE step of the trainer's schedule, the Gaussian transitions of the policy and of
the frozen model (the same network with its LoRA switched off) from the same state differ only in their means,
so KL = |mean - mean_ref|^2 / (2 scale^2), averaged over a sample's dimensions and over the steps. It is
measured the same way for every trainer (grpo's own `kl` is the same quantity on its training samples), so
the curves of raft, refl and grpo can be compared. Epsilon models (no SDE) report no KL.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..generators.protocol import Generator, seeded_noise
from ..generators.sampling import trajectory
from ..rewards.protocol import Reward
from .lora import adapters_disabled
from .sde import sde_step, sigma_cap, step_scale, transition_kl
from .trainers import Policy

Monitors = Callable[[str], dict[str, Reward]]  # prompt -> {name: reward measured on held-out samples}


def path_kl(policy: Policy, gen: Generator, states: list[torch.Tensor], noise_level: float) -> float:
    """KL(policy || frozen) of the SDE transitions from the given ODE states (all steps but the last, as grpo
    samples), per dimension, mean over steps."""
    steps = len(states) - 1
    sigmas = gen.sigmas(steps).to(gen.device)
    cap = sigma_cap(sigmas)
    values = []
    for i in range(max(steps - 1, 1)):
        x, x_next = states[i], states[i + 1]  # only the transition means are compared
        _, _, mean = sde_step(gen, x, sigmas[i], sigmas[i + 1], cap, noise_level, x_next=x_next)
        with adapters_disabled(policy.network):
            _, _, mean_ref = sde_step(gen, x, sigmas[i], sigmas[i + 1], cap, noise_level, x_next=x_next)
        scale = step_scale(sigmas[i], sigmas[i + 1], cap, noise_level).clamp_min(1e-12)
        values.append(float(transition_kl(mean, mean_ref, scale).mean()))
    return sum(values) / len(values)


def held_out_metrics(
    policy: Policy,
    prompts: list[str],
    seeds: list[int],
    steps: int,
    noise_level: float = 0.7,
    monitors: Monitors | None = None,
) -> dict[str, float]:
    """{"reward": mean training reward, "kl": KL to the frozen model (flow models, SDE at `noise_level`),
    <monitor>: its mean} over ODE samples of `prompts` x `seeds` with `steps` sampling steps."""
    rewards: list[torch.Tensor] = []
    measured: dict[str, list[torch.Tensor]] = {}
    kls: list[float] = []
    with torch.no_grad():
        for prompt in prompts:
            gen = policy.generator_for(prompt)
            noise = torch.cat([seeded_noise(gen, 1, s) for s in seeds])
            states = trajectory(gen, noise, steps)
            images = gen.decode(states[-1])
            rewards.append(policy.reward_for(prompt)(images).float().cpu())
            for name, monitor in (monitors(prompt) if monitors else {}).items():
                measured.setdefault(name, []).append(monitor(images).float().cpu())
            if gen.parameterization == "flow" and steps > 1:
                kls.append(path_kl(policy, gen, states, noise_level))
    out = {"reward": float(torch.cat(rewards).mean())}
    if kls:
        out["kl"] = sum(kls) / len(kls)
    return out | {name: float(torch.cat(values).mean()) for name, values in measured.items()}
