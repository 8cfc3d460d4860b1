"""DiffusionNFT (Zheng et al., ICLR 2026): RL on the forward process. Clean samples of the old policy are re-noised
and the model is trained with a denoising loss that contrasts an implicit positive and an implicit negative policy,
weighted by each sample's normalised reward. No likelihoods, no SDE: the samples may come from any sampler (our
Euler, Heun or DPM-Solver++(2M) over any generator, the diffusers adapters included; a ComfyUI sampler in the
node), and guidance may be off (CFG-free).

One step (`nft_step`):
1. Each prompt's group of `group_size` clean samples from `policy.sample_clean` (default: `nft_sampler`, our Euler,
   Heun or DPM-Solver++(2M) ODE sampler; the ComfyUI node passes ComfyUI's sampler), with the old policy's
   weights, and their rewards.
2. Rewards -> r in [0, 1] per group, as the paper does: grpo's group-relative advantage A (group mean; std of the
   batch or of the group; clipped to +-adv_clip), then r = clamp(A / adv_clip / 2 + 1/2, 0, 1) (1: best, 1/2: the
   group mean, 0: worst).
3. Each sample is re-noised with fresh noise at `nft_timesteps` noise levels of the sampling schedule, and there
   the trained model's x0_theta and the old policy's x0_old (no gradient) make the implicit policies
   positive x0+ = (1 - beta) x0_old + beta x0_theta, negative x0- = (1 + beta) x0_old - beta x0_theta;
   the loss is adv_clip / beta * (r |x0+ - x0|^2 / w+ + (1 - r) |x0- - x0|^2 / w-), each w the detached mean
   |x0+- - x0| of that sample (the paper's adaptive weighting), plus kl_beta |(x0_theta - x0_ref) / sigma|^2
   to the frozen model (the LoRA switched off) when kl_beta > 0.
4. `minibatches` optimizer updates; the step's samples are split among them, each used once.

Parameterisations. The paper writes the policies in velocity, v+ = (1 - beta) v_old + beta v_theta and
v- = (1 + beta) v_old - beta v_theta, and compares their x0 predictions with the clean sample. At a fixed noisy
x and sigma, x0 is an affine function of the network's output with the same coefficients for every policy
(flow: x0 = x - sigma v; eps: x0 = x - sigma eps; classifier-free guidance mixes two such outputs affinely too), so
the same mixtures of `Generator.denoise`'s x0 predictions are exactly the x0 of the mixed velocity (or epsilon).
Written on x0, with the forward process of the model's own parameterisation (`noised`: (1 - sigma) x0 + sigma eps
for flow models, x0 + sigma eps for eps models such as SD1.5), the loss is the paper's for flow models and the
same construction for eps models.

The old policy samples the step's images and gives the x0_old predictions. As in the paper it is an exponential
moving average of the trained weights, old <- d old + (1 - d) theta after every step, with d from
`old_policy_decay`: 0 before `nft_decay_start`, then `nft_decay_rate` per step up to `nft_decay_max` (the paper's
schedules: rate 0.001 up to 0.5, or rate 0.0075 up to 0.999 after 75 steps; it counts optimizer updates, two per
step in its configs, where d here counts training steps). With rate 0 (the default) d is always 0: the old policy
is the weights the step starts from, its x0 predictions are taken before the step's first update and no copy is
kept. With rate > 0 `OldPolicy` keeps the EMA copy of the LoRA tensors (saved in the run's checkpoint) and swaps
it in to sample and predict. With `minibatches` > 1 the updates after the first train a policy that has moved
away from the one that sampled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from ..generators.protocol import Generator, noised, seeded_noise
from ..generators.sampling import ODE_SAMPLERS
from ..rewards.protocol import as_reward
from .lora import adapters_disabled
from .trainers import Optimizing, Policy, TrainerConfig, group_advantages, reward_stats


@dataclass
class NftGroup:
    """One prompt's clean samples, their normalised rewards and the noise levels they are trained at this step."""

    prompt: str
    x0: torch.Tensor  # [k, ...] in the sampler's latent space
    r: torch.Tensor  # [k] in [0, 1]
    sigma_indices: list[int]  # indices into the sampling schedule


@dataclass
class NftTerm:
    """Some images of one group re-noised at one noise level, with the old policy's prediction once known."""

    group: NftGroup
    images: torch.Tensor  # indices into the group
    sigma: torch.Tensor
    x_noisy: torch.Tensor
    x0_old: torch.Tensor | None = None


class OldPolicy:
    """DiffusionNFT's old policy when it is an EMA: a copy of the LoRA tensors, swapped in to sample and predict."""

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.tensors = [p.detach().clone() for p in params]

    @contextmanager
    def active(self) -> Iterator[None]:
        """Inside the block the LoRA holds the old weights; the trained ones are put back after (errors too)."""
        trained = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, old in zip(self.params, self.tensors):
                p.copy_(old)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, t in zip(self.params, trained):
                    p.copy_(t)

    def update(self, decay: float) -> None:
        """old <- decay old + (1 - decay) theta."""
        with torch.no_grad():
            for old, p in zip(self.tensors, self.params):
                old.mul_(decay).add_(p.detach().to(old.dtype), alpha=1 - decay)


def old_policy_decay(cfg: TrainerConfig, step: int) -> float:
    """The EMA decay applied after training step `step` (0-based): 0 before nft_decay_start, then nft_decay_rate
    per step since, at most nft_decay_max."""
    if step < cfg.nft_decay_start:
        return 0.0
    return min(cfg.nft_decay_rate * (step - cfg.nft_decay_start), cfg.nft_decay_max)


def normalised_rewards(advantages: torch.Tensor, adv_clip: float) -> torch.Tensor:
    """The paper's r in [0, 1] from clipped group-relative advantages: A / adv_clip / 2 + 1/2, clamped."""
    return (advantages / adv_clip / 2 + 0.5).clamp(0, 1)


def nft_loss(
    x0_theta: torch.Tensor, x0_old: torch.Tensor, x0: torch.Tensor, r: torch.Tensor, beta: float, adv_clip: float
) -> torch.Tensor:
    """The DiffusionNFT loss of each sample [B]: the positive policy pulled to x0 with weight r, the negative with
    1 - r, each error divided by its detached mean absolute value, over beta, times adv_clip (as the paper)."""
    x0_theta, x0_old, x0 = x0_theta.float(), x0_old.detach().float(), x0.float()
    positive = (1 - beta) * x0_old + beta * x0_theta
    negative = (1 + beta) * x0_old - beta * x0_theta
    r = r.float().to(x0.device)
    return adv_clip * (r * weighted_error(positive, x0) + (1 - r) * weighted_error(negative, x0)) / beta


def weighted_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample: mean squared error over its mean absolute error (detached, at least 1e-5)."""
    dims = tuple(range(1, target.ndim))
    err = prediction - target
    weight = err.detach().abs().double().mean(dims, keepdim=True).clamp(min=1e-5).to(err.dtype)
    return (err**2 / weight).mean(dims)


def sample_groups(
    policy: Policy, cfg: TrainerConfig, prompts: list[str], seed: int
) -> tuple[list[NftGroup], torch.Tensor]:
    """Clean samples of every prompt from the policy's sampler, their rewards (all, for the metrics) and r."""
    sampler = policy.sample_clean or ODE_SAMPLERS[cfg.nft_sampler]
    pending = []
    with torch.no_grad():
        for j, prompt in enumerate(prompts):
            gen = policy.generator_for(prompt)
            x0 = sampler(gen, seeded_noise(gen, cfg.group_size, seed + j), cfg.sample_steps).detach()
            pending.append((prompt, x0, as_reward(policy.reward_for(prompt)).submit(gen.decode(x0))))
    rewards = [future.result().float().cpu() for _, _, future in pending]
    advantages, _ = group_advantages(rewards, cfg.adv_std == "group", cfg.adv_clip)
    count = cfg.nft_timesteps or cfg.sample_steps
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    groups = []
    for (prompt, x0, _), a in zip(pending, advantages):
        levels = [int(i) for i in torch.randperm(cfg.sample_steps, generator=g)[:count]]
        groups.append(NftGroup(prompt, x0, normalised_rewards(a, cfg.adv_clip), levels))
    return groups, torch.cat(rewards)


def minibatch_terms(policy: Policy, cfg: TrainerConfig, groups: list[NftGroup], seed: int) -> list[list[NftTerm]]:
    """The step's (images, noise level) terms: each group's images split round-robin into `minibatches` batches,
    re-noised with seeded noise at each of the group's noise levels (the model's own forward process)."""
    g = torch.Generator().manual_seed(seed * 7919 + 29)
    n_batches = min(cfg.minibatches, cfg.group_size)
    batches: list[list[NftTerm]] = [[] for _ in range(n_batches)]
    for group in groups:
        gen = policy.generator_for(group.prompt)
        sigmas = gen.sigmas(cfg.sample_steps).to(gen.device)
        for b in range(n_batches):
            images = torch.arange(b, group.x0.shape[0], n_batches)
            x0 = group.x0[images]
            for i in group.sigma_indices:
                eps = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
                batches[b].append(NftTerm(group, images, sigmas[i], noised(gen, x0, eps, sigmas[i])))
    return batches


def nft_step(
    policy: Policy,
    cfg: TrainerConfig,
    prompts: list[str],
    seed: int,
    opt: Optimizing,
    old: OldPolicy | None = None,
    step: int = 0,
) -> dict[str, float]:
    """Sample clean groups with any sampler, normalise rewards per group to [0, 1], then `minibatches` updates of
    the DiffusionNFT loss on the re-noised samples. `old`: the EMA old policy (None: the step's start weights),
    updated at the end with the decay of training step `step`."""
    with old.active() if old is not None else nullcontext():
        groups, rewards = sample_groups(policy, cfg, prompts, seed)
        batches = minibatch_terms(policy, cfg, groups, seed)
        with torch.no_grad():  # the old policy's predictions (with no EMA, the first batch computes its own)
            for batch in batches if old is not None else batches[1:]:
                for term in batch:
                    term.x0_old = policy.generator_for(term.group.prompt).denoise(term.x_noisy, term.sigma).detach()
    zero_std = sum(1 for group in groups if bool((group.r == group.r[0]).all())) / len(groups)
    loss_sum, kl_sum, deviation, pieces = 0.0, 0.0, 0.0, 0
    for batch in batches:
        n_images = sum(len(term.images) for term in batch)
        for term in batch:
            loss, kl, dev = term_loss(policy, cfg, term)
            opt.backward(loss * len(term.images) / n_images)
            loss_sum += float(loss.detach())
            kl_sum += kl
            deviation += dev
            pieces += 1
        opt.step()
    if old is not None:
        old.update(old_policy_decay(cfg, step))
    return reward_stats(rewards) | {
        "loss": loss_sum / pieces,
        "kl": kl_sum / pieces,
        "old_deviation": deviation / pieces,
        "zero_std_ratio": zero_std,
    }


def term_loss(policy: Policy, cfg: TrainerConfig, term: NftTerm) -> tuple[torch.Tensor, float, float]:
    """The mean NFT loss (plus kl_beta times the KL term) of one term's images, the KL and |x0_theta - x0_old|^2 /
    sigma^2 (how far the update moved from the old policy)."""
    gen: Generator = policy.generator_for(term.group.prompt)
    x0_theta = gen.denoise(term.x_noisy, term.sigma)
    x0_old = x0_theta.detach() if term.x0_old is None else term.x0_old
    x0 = term.group.x0[term.images]
    loss = nft_loss(x0_theta, x0_old, x0, term.group.r[term.images], cfg.nft_beta, cfg.adv_clip).mean()
    kl = 0.0
    if cfg.kl_beta > 0:
        with torch.no_grad(), adapters_disabled(policy.network):
            x0_ref = gen.denoise(term.x_noisy, term.sigma)
        kl_term = (((x0_theta.float() - x0_ref.float()) / term.sigma) ** 2).mean()
        loss = loss + cfg.kl_beta * kl_term
        kl = float(kl_term.detach())
    dev = float((((x0_theta.detach().float() - x0_old.float()) / term.sigma) ** 2).mean())
    return loss, kl, dev
