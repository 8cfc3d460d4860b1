"""The RL trainers over the generator protocol. Each `step` trains on one batch of prompts and returns its metrics;
gradients flow only into the LoRA parameters (the reward model is frozen). DiffusionNFT (`nft`) is in nft.py.

- RAFT: best-of-N per prompt with the reward model, then the ordinary denoising loss on the winners.
- ReFL / DRaFT-K: sample without gradient to a late step, keep gradients through the last K steps, take the
  predicted clean latent, decode, score differentiably and maximise the reward (or the hinge ReLU(m - r)).
  `random_stop` > 0 stops 0..random_stop steps earlier at random (ReFL); 0 with K steps is DRaFT-K.
- Flow-GRPO: SDE sampling with per-step log-probs, group-relative advantages, PPO clip, optional KL to the
  frozen model (the same network with its LoRA switched off), SDE on all steps but the last or a high-noise
  window (ODE elsewhere). Only the SDE steps are trained. Options:
  - `window_mode = "sliding"` (MixGRPO): a window of `window` SDE steps starts at step 0 and moves
    `window_stride` steps later every `window_shift_every` training steps; past the last position where it
    fits before the final step it wraps back to step 0 (MixGRPO's released recipe rolls back to the start).
  - `branch_at` = i with `branches` = k (TempFlow-GRPO-style trajectory branching): each group member is
    sampled with the ODE up to step i, then k SDE branches leave its state at step i, each finished with the
    ODE. Advantages compare the k branches of one member (they share everything but that one transition), and
    only the transition at step i is trained: per-step credit for step i.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..generators.protocol import Generator, initial_latent, noised, seeded_noise
from ..generators.sampling import ODE_SAMPLERS, euler_step, sample
from ..rewards.protocol import Reward, as_reward
from .lora import adapters_disabled
from .sde import sde_step, sigma_cap, step_scale, transition_kl

ALGORITHMS = ("raft", "refl", "grpo", "nft")  # nft: backend/rl/nft.py (DiffusionNFT)
WINDOW_MODES = ("fixed", "sliding")  # grpo's SDE window


@dataclass
class Policy:
    """The generator being trained: a generator per prompt (all sharing `network`), a reward per prompt."""

    generator_for: Callable[[str], Generator]
    reward_for: Callable[[str], Reward]
    network: nn.Module
    params: list[nn.Parameter]
    family: str | None = None  # the network's LoRA family (export key names); None: from its class
    monitors_for: Callable[[str], dict[str, Reward]] | None = None  # measured on held-out samples, not optimised
    # nft's sampler: (generator, unit noise [k, ...], steps) -> clean latents; None: the Euler ODE `sample`
    sample_clean: Callable[[Generator, torch.Tensor, int], torch.Tensor] | None = None


@dataclass
class Optimizing:
    """How a trainer applies gradients: `backward` accumulates, `step` updates (or skips a non-finite step)."""

    backward: Callable[[torch.Tensor], None]
    step: Callable[[], bool]


@dataclass
class TrainerConfig:
    """Hyper-parameters of all the trainers (each uses its own)."""

    group_size: int = 4  # images per prompt per step
    sample_steps: int = 8  # sampling steps while training
    # RAFT
    raft_keep: int = 1  # winners kept per prompt
    raft_updates: int = 4  # gradient steps on the winners per training step
    # ReFL / DRaFT-K
    grad_steps: int = 1  # K: sampling steps with gradient
    random_stop: int = 0  # ReFL: stop up to this many steps early, at random
    hinge_margin: float | None = None  # loss ReLU(margin - r) * hinge_weight instead of -r
    hinge_weight: float = 1.0
    pretrain_weight: float = 0.0  # weight of the denoising loss on `pretrain_data` (regulariser)
    checkpointing: bool = True  # gradient checkpointing of the denoiser calls with gradient
    # Flow-GRPO
    noise_level: float = 0.7  # a in std = a sqrt(sigma / (1 - sigma))
    clip_range: float = 1e-3
    kl_beta: float = 0.0
    adv_std: str = "global"  # "global": std of the whole batch; "group": per prompt
    adv_clip: float = 5.0
    window: int = 0  # 0: SDE on all steps but the last; w > 0: SDE on the first w (high-noise) steps only
    minibatches: int = 2  # optimizer updates per step (grpo: groups, nft: images split into this many minibatches)
    window_mode: str = "fixed"  # "fixed": the window stays first; "sliding": it moves later as training goes on
    window_shift_every: int = 10  # sliding: training steps between two moves of the window
    window_stride: int = 1  # sliding: sampling steps the window moves per shift (it wraps back to step 0)
    branch_at: int | None = None  # branching: the one SDE (and trained) step; None: off
    branches: int = 4  # branching: SDE branches per group member at `branch_at`
    # DiffusionNFT (also uses adv_std, adv_clip, kl_beta and minibatches)
    nft_beta: float = 1.0  # implicit policies (1 - beta) old + beta theta and (1 + beta) old - beta theta
    nft_timesteps: int = 0  # noise levels of the sampling schedule each image is trained at per step; 0: all
    nft_sampler: str = "euler"  # the ODE sampler of the clean samples (ODE_SAMPLERS); the node uses ComfyUI's own
    # the old policy: an EMA of the LoRA, old <- d old + (1 - d) theta after each step, d = 0 before
    # nft_decay_start, then nft_decay_rate per step up to nft_decay_max (rate 0: old is the step's start weights)
    nft_decay_rate: float = 0.0
    nft_decay_max: float = 0.5
    nft_decay_start: int = 0

    def validate(self) -> TrainerConfig:
        checks = [
            ("group_size", self.group_size >= 1),
            ("sample_steps", self.sample_steps >= 1),
            ("raft_keep", 1 <= self.raft_keep <= self.group_size),
            ("raft_updates", self.raft_updates >= 1),
            ("grad_steps", 1 <= self.grad_steps <= self.sample_steps),
            ("random_stop", 0 <= self.random_stop <= self.sample_steps - self.grad_steps),
            ("noise_level", 0 <= self.noise_level <= 2),
            ("clip_range", self.clip_range > 0),
            ("kl_beta", self.kl_beta >= 0),
            ("adv_std", self.adv_std in ("global", "group")),
            ("adv_clip", self.adv_clip > 0),
            ("window", 0 <= self.window < self.sample_steps or self.sample_steps == 1),
            ("minibatches", self.minibatches >= 1),
            ("pretrain_weight", self.pretrain_weight >= 0),
            ("nft_beta", _number(self.nft_beta) and 0 < self.nft_beta <= 1),
            ("nft_timesteps", _whole(self.nft_timesteps) and 0 <= self.nft_timesteps <= self.sample_steps),
            ("nft_sampler", self.nft_sampler in ODE_SAMPLERS),
            ("nft_decay_rate", _number(self.nft_decay_rate) and 0 <= self.nft_decay_rate <= 1),
            ("nft_decay_max", _number(self.nft_decay_max) and 0 <= self.nft_decay_max < 1),
            ("nft_decay_start", _whole(self.nft_decay_start) and self.nft_decay_start >= 0),
        ]
        bad = [name for name, ok in checks if not ok]
        if bad:
            values = ", ".join(f"{n}={getattr(self, n)!r}" for n in bad)
            raise ValueError(
                f"invalid trainer settings: {values} (raft_keep <= group_size, grad_steps + random_stop <= "
                "sample_steps, window < sample_steps, adv_std 'global' or 'group', nft_beta in (0, 1], "
                "nft_timesteps from 0 (all) to sample_steps, nft_sampler one of "
                f"{', '.join(ODE_SAMPLERS)}, nft_decay_rate in [0, 1], nft_decay_max in [0, 1), nft_decay_start a "
                "whole number >= 0)"
            )
        self.validate_grpo_options()
        return self

    def validate_grpo_options(self) -> None:
        """Raise ValueError naming the bad sliding-window or branching knob and the fix."""
        if self.window_mode not in WINDOW_MODES:
            raise ValueError(f"window_mode must be 'fixed' or 'sliding', got {self.window_mode!r}")
        for name in ("window_shift_every", "window_stride", "branches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.window_mode == "sliding" and not 1 <= self.window <= self.sample_steps - 1:
            raise ValueError(
                f"window_mode 'sliding' moves a window of `window` SDE steps inside the first sample_steps - 1 "
                f"steps: set window to 1..{self.sample_steps - 1} (MixGRPO: 4 of 25), got window={self.window}"
            )
        if self.branch_at is None:
            return
        if isinstance(self.branch_at, bool) or not isinstance(self.branch_at, int):
            raise ValueError(f"branch_at must be a step index or None (off), got {self.branch_at!r}")
        if not 0 <= self.branch_at <= self.sample_steps - 2:
            raise ValueError(
                f"branch_at must be a step in 0..sample_steps - 2 = {self.sample_steps - 2} (the last step lands "
                f"on sigma 0 and is not stochastic), got branch_at={self.branch_at} with sample_steps="
                f"{self.sample_steps}"
            )
        if self.branches < 2:
            raise ValueError(f"branches must be at least 2 (advantages compare the branches), got {self.branches}")
        if self.noise_level <= 0:
            raise ValueError("branch_at needs noise_level > 0: the branches differ only by the SDE step's noise")
        if self.window or self.window_mode != "fixed":
            raise ValueError(
                "branch_at replaces the SDE window (the branch step is the only SDE step): leave window = 0 and "
                f"window_mode = 'fixed', got window={self.window}, window_mode={self.window_mode!r}"
            )


def _number(value: object) -> bool:
    """A real number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: object) -> bool:
    """An integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def denoising_loss(generator: Generator, x0: torch.Tensor, seed: int, sigma_grid: int = 100) -> torch.Tensor:
    """The ordinary training loss at one random noise level: |(x0_hat - x0) / sigma|^2 (the eps loss for eps
    models, the velocity loss for flow models)."""
    g = torch.Generator().manual_seed(seed)
    sigmas = generator.sigmas(sigma_grid)[:-1]
    sigma = sigmas[int(torch.randint(0, len(sigmas), (1,), generator=g))]
    eps = torch.randn(x0.shape, generator=g).to(x0.device)
    x = noised(generator, x0, eps, sigma)
    return (((generator.denoise(x, sigma) - x0) / sigma) ** 2).mean()


# --- RAFT --------------------------------------------------------------------------------------------------------
def raft_step(policy: Policy, cfg: TrainerConfig, prompts: list[str], seed: int, opt: Optimizing) -> dict[str, float]:
    """Best-of-group per prompt (ODE samples), then `raft_updates` denoising-loss updates on the winners."""
    pending = []
    for j, prompt in enumerate(prompts):
        gen = policy.generator_for(prompt)
        with torch.no_grad():
            latents = sample(gen, seeded_noise(gen, cfg.group_size, seed + j), cfg.sample_steps)
            pending.append((prompt, latents, as_reward(policy.reward_for(prompt)).submit(gen.decode(latents))))
    winners, all_rewards = [], []
    for prompt, latents, future in pending:
        rewards = future.result()
        all_rewards.append(rewards)
        keep = rewards.argsort(descending=True)[: cfg.raft_keep]
        winners.append((prompt, latents[keep]))
    losses = []
    for u in range(cfg.raft_updates):
        total = 0.0
        for j, (prompt, x0) in enumerate(winners):
            loss = denoising_loss(policy.generator_for(prompt), x0, seed * 7919 + u * 131 + j) / len(winners)
            opt.backward(loss)
            total += float(loss.detach())
        opt.step()
        losses.append(total)
    return reward_stats(torch.cat(all_rewards)) | {
        "loss": sum(losses) / len(losses),
        "winner_reward": float(torch.stack([r.max() for r in all_rewards]).mean()),
    }


# --- ReFL / DRaFT-K ------------------------------------------------------------------------------------------------
def refl_step(
    policy: Policy,
    cfg: TrainerConfig,
    prompts: list[str],
    seed: int,
    opt: Optimizing,
    pretrain_data: Callable[[int], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Reward gradients through the last `grad_steps` sampling steps (stopping early at random for ReFL)."""
    rng = random.Random(seed)
    rewards_all, total = [], 0.0
    for j, prompt in enumerate(prompts):
        gen = policy.generator_for(prompt)
        reward = policy.reward_for(prompt)
        if not reward.differentiable:
            raise ValueError(
                "refl needs a differentiable reward (an in-process reward model or statistic); remote "
                "and pairwise-by-HTTP rewards work with raft and grpo"
            )
        steps = cfg.sample_steps
        end = steps - rng.randint(0, cfg.random_stop)  # the step whose x0 prediction is the final image
        start = end - cfg.grad_steps
        sigmas = gen.sigmas(steps).to(gen.device)
        noise = seeded_noise(gen, cfg.group_size, seed + j)
        with torch.no_grad():
            x = sample(gen, noise, steps, stop=start)
        x0 = None
        for i in range(start, end):
            if cfg.checkpointing:
                x, x0 = checkpoint(euler_step, gen, x, sigmas[i], sigmas[i + 1], use_reentrant=False)
            else:
                x, x0 = euler_step(gen, x, sigmas[i], sigmas[i + 1])
        r = reward(gen.decode(x0))
        loss = (
            (torch.relu(cfg.hinge_margin - r) * cfg.hinge_weight).mean() if cfg.hinge_margin is not None else -r.mean()
        )
        if cfg.pretrain_weight > 0 and pretrain_data is not None:
            loss = loss + cfg.pretrain_weight * denoising_loss(gen, pretrain_data(seed + j).to(gen.device), seed + j)
        opt.backward(loss / len(prompts))
        total += float(loss.detach()) / len(prompts)
        rewards_all.append(r.detach().float().cpu())
    opt.step()
    return reward_stats(torch.cat(rewards_all)) | {"loss": total}


# --- Flow-GRPO ------------------------------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """One group: its states, which steps were stochastic, their old log-probs, and the rewards. A plain group is
    one prompt's `group_size` images; a branching group is one member's `branches` images, whose states up to
    `branch_at` are the member's one shared state ([1, ...]) and [branches, ...] after it."""

    prompt: str
    states: list[torch.Tensor]  # [steps + 1] x [k, ...]
    sde_steps: list[int]
    old_logps: dict[int, torch.Tensor] = field(default_factory=dict)
    rewards: torch.Tensor | None = None


def window_start(cfg: TrainerConfig, step: int) -> int:
    """The window's first step at training step `step`: 0 for a fixed window; for a sliding one
    window_stride * (step // window_shift_every), wrapped back to 0 past the last start from which the window
    still ends before the final sampling step."""
    if cfg.window_mode != "sliding":
        return 0
    starts = range(0, cfg.sample_steps - cfg.window, cfg.window_stride)
    return starts[(step // cfg.window_shift_every) % len(starts)]


def sde_window(cfg: TrainerConfig, step: int = 0) -> list[int]:
    """The steps sampled (and trained) with the SDE at training step `step`: the branch step; all but the last;
    or `window` steps from `window_start` (a fixed window: the first, high-noise steps)."""
    if cfg.branch_at is not None:
        return [cfg.branch_at]
    if not cfg.window:
        return list(range(max(cfg.sample_steps - 1, 1)))
    start = window_start(cfg, step)
    return list(range(start, start + cfg.window))


def require_flow(gen: Generator) -> None:
    """Refuse an epsilon model: the SDE below is written for flow models."""
    if gen.parameterization != "flow":
        raise ValueError(
            "grpo's SDE is written for flow models (SD3, Flux, Wan, the tiny flow model); use raft or "
            "refl for epsilon models (SD 1.x/2.x, SDXL)"
        )


def sample_trajectory(
    gen: Generator,
    noise: torch.Tensor,
    cfg: TrainerConfig,
    seed: int,
    noise_level: float | None = None,
    step: int = 0,
) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
    """SDE sampling on training step `step`'s window, Euler elsewhere; returns the states and the window's
    log-probs."""
    require_flow(gen)
    level = cfg.noise_level if noise_level is None else noise_level
    sigmas = gen.sigmas(cfg.sample_steps).to(gen.device)
    cap = sigma_cap(sigmas)
    window = set(sde_window(cfg, step))
    g = torch.Generator().manual_seed(seed)
    x = initial_latent(gen, noise, sigmas[0]).float()
    states, logps = [x], {}
    for i in range(cfg.sample_steps):
        if i in window:
            z = torch.randn(x.shape, generator=g).to(x.device)
            x, logps[i], _ = sde_step(gen, x, sigmas[i], sigmas[i + 1], cap, level, noise=z)
        else:
            x, _ = euler_step(gen, x, sigmas[i], sigmas[i + 1])
        states.append(x)
    return states, logps


def sample_branches(
    gen: Generator, noise: torch.Tensor, cfg: TrainerConfig, seed: int
) -> list[tuple[list[torch.Tensor], dict[int, torch.Tensor]]]:
    """Per group member (a row of `noise`): Euler steps up to `branch_at`, then `branches` SDE steps from that one
    state (one denoiser call, a noise per branch), each branch finished with Euler steps (all members' branches
    in one batch). Each member's states ([1, ...] up to branch_at, [branches, ...] after) and the branch step's
    log-probs."""
    require_flow(gen)
    sigmas = gen.sigmas(cfg.sample_steps).to(gen.device)
    cap, b = sigma_cap(sigmas), cfg.branch_at
    g = torch.Generator().manual_seed(seed)
    x = initial_latent(gen, noise, sigmas[0]).float()
    prefix = [x]
    for i in range(b):
        x, _ = euler_step(gen, x, sigmas[i], sigmas[i + 1])
        prefix.append(x)
    members = []
    for m in range(x.shape[0]):
        z = torch.randn((cfg.branches, *x.shape[1:]), generator=g).to(x.device)
        y, logp, _ = sde_step(gen, x[m : m + 1], sigmas[b], sigmas[b + 1], cap, cfg.noise_level, noise=z)
        members.append(([s[m : m + 1] for s in prefix] + [y], {b: logp}))
    y = torch.cat([states[-1] for states, _ in members])
    for i in range(b + 1, cfg.sample_steps):
        y, _ = euler_step(gen, y, sigmas[i], sigmas[i + 1])
        for (states, _), part in zip(members, y.split(cfg.branches)):
            states.append(part)
    return members


def sample_groups(
    policy: Policy, cfg: TrainerConfig, prompts: list[str], seed: int, step: int
) -> tuple[list[Trajectory], int]:
    """Every prompt's groups with their rewards (a prompt is scored while the next one samples), and the
    denoiser calls the sampling took (calls, not images: each is batched)."""
    groups, futures, calls = [], [], 0
    with torch.no_grad():
        for j, prompt in enumerate(prompts):
            gen = policy.generator_for(prompt)
            noise = seeded_noise(gen, cfg.group_size, seed + j)
            if cfg.branch_at is None:
                states, logps = sample_trajectory(gen, noise, cfg, seed * 7919 + j, step=step)
                group = [Trajectory(prompt, states, sorted(logps), logps)]
                calls += cfg.sample_steps
            else:
                members = sample_branches(gen, noise, cfg, seed * 7919 + j)
                group = [Trajectory(prompt, states, sorted(logps), logps) for states, logps in members]
                calls += cfg.sample_steps - 1 + cfg.group_size  # one branch call per member
            groups.append(group)
            images = gen.decode(torch.cat([t.states[-1] for t in group]))
            futures.append(as_reward(policy.reward_for(prompt)).submit(images))
    trajectories = []
    for group, future in zip(groups, futures):
        rewards = future.result().float()
        for t, r in zip(group, rewards.split(len(rewards) // len(group))):
            t.rewards = r
            trajectories.append(t)
    return trajectories, calls


def group_advantages(
    rewards: list[torch.Tensor], per_group_std: bool, clip: float
) -> tuple[list[torch.Tensor], list[bool]]:
    """(r - group mean) / (std + 1e-4), std of the whole batch or of each group, clamped; and which groups
    carry signal (a group whose rewards are all equal is dropped)."""
    all_r = torch.cat(rewards)
    global_std = all_r.std(unbiased=False) if all_r.numel() > 1 else torch.tensor(0.0)
    adv, keep = [], []
    for r in rewards:
        std = r.std(unbiased=False) if r.numel() > 1 else torch.tensor(0.0)
        keep.append(bool(std > 0))
        adv.append(((r - r.mean()) / ((std if per_group_std else global_std) + 1e-4)).clamp(-clip, clip))
    return adv, keep


def grpo_step(
    policy: Policy,
    cfg: TrainerConfig,
    prompts: list[str],
    seed: int,
    opt: Optimizing,
    ratio_probe: list | None = None,
    step: int = 0,
) -> dict[str, float]:
    """Sample groups with the SDE (training step `step`'s window, or branches), score, then PPO-clip updates
    (minibatches of groups) over the SDE steps. `grad_calls` counts the denoiser calls with gradient (one per
    trained step of a kept group), `sample_calls` those of sampling."""
    trajectories, sample_calls = sample_groups(policy, cfg, prompts, seed, step)
    advantages, keep = group_advantages([t.rewards for t in trajectories], cfg.adv_std == "group", cfg.adv_clip)
    kept = [(t, a) for t, a, k in zip(trajectories, advantages, keep) if k]
    stats = reward_stats(torch.cat([t.rewards for t in trajectories])) | {
        "zero_std_ratio": 1 - len(kept) / len(trajectories),
        "loss": 0.0,
        "kl": 0.0,
        "clip_frac": 0.0,
        "ratio_mean": 1.0,
        "grad_calls": 0,
        "sample_calls": sample_calls,
    }
    if cfg.window_mode == "sliding":
        stats["window_start"] = window_start(cfg, step)
    if not kept:
        return stats
    batches = [kept[i :: cfg.minibatches] for i in range(min(cfg.minibatches, len(kept)))]
    loss_sum, kl_sum, clipped, ratios, pieces = 0.0, 0.0, 0.0, 0.0, 0
    for batch in batches:
        n_terms = len(batch) * len(batch[0][0].sde_steps)
        for t, adv in batch:
            gen = policy.generator_for(t.prompt)
            sigmas = gen.sigmas(cfg.sample_steps).to(gen.device)
            cap = sigma_cap(sigmas)
            a = adv.to(gen.device)
            for i in t.sde_steps:
                # a branch state is [1, ...] and its branches [k, ...]: the log-prob broadcasts over them
                x, x_next = t.states[i], t.states[i + 1]
                _, logp, mean = sde_step(gen, x, sigmas[i], sigmas[i + 1], cap, cfg.noise_level, x_next=x_next)
                ratio = torch.exp(logp - t.old_logps[i])
                if ratio_probe is not None:
                    ratio_probe.append(ratio.detach().clone())
                unclipped = -a * ratio
                clipped_loss = -a * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
                loss = torch.maximum(unclipped, clipped_loss).mean()
                if cfg.kl_beta > 0:
                    with torch.no_grad(), adapters_disabled(policy.network):
                        _, _, mean_ref = sde_step(gen, x, sigmas[i], sigmas[i + 1], cap, cfg.noise_level, x_next=x_next)
                    scale = step_scale(sigmas[i], sigmas[i + 1], cap, cfg.noise_level)
                    kl = transition_kl(mean, mean_ref, scale).mean()
                    loss = loss + cfg.kl_beta * kl
                    kl_sum += float(kl.detach())
                opt.backward(loss / n_terms)
                loss_sum += float(loss.detach())
                clipped += float(((ratio - 1).abs() > cfg.clip_range).float().mean())
                ratios += float(ratio.detach().mean())
                pieces += 1
        opt.step()
    return stats | {
        "loss": loss_sum / pieces,
        "kl": kl_sum / pieces,
        "clip_frac": clipped / pieces,
        "ratio_mean": ratios / pieces,
        "grad_calls": pieces,
    }


def reward_stats(rewards: torch.Tensor) -> dict[str, float]:
    """Mean and (population) std of a step's rewards."""
    r = rewards.detach().float()
    return {"reward_mean": float(r.mean()), "reward_std": float(r.std(unbiased=False)) if r.numel() > 1 else 0.0}
