"""Noise search algorithms. Each spends a budget of denoiser calls, is deterministic for a seed, and returns
the best latent, its initial noise, its image and score, and the full history of candidates; an optional
`on_candidate(candidate, image)` receives every recorded candidate with its image as it is scored.

- best_of_n: N seeds sampled in batches, keep the best.
- random_search: pools of 2, 4, 8, ... fresh seeds until the budget is spent (tt-scale-flux).
  Both take early pruning (`prune_at`, `keep_fraction`; TTSnap-style, see pruning.py): candidates are scored on
  their predicted clean images at an intermediate step and only the top fraction is finished.
- zero_order: around the best noise, norm-preserving neighbours n' = |n| (c u + sqrt(1 - c^2) w);
  the pivot moves when a neighbour scores higher.
- search_over_paths: N trajectories; at chosen steps each kept state's predicted clean image is re-noised
  into children, denoised further, and the best states (by the verifier on their predicted clean images)
  are kept, down to sigma 0 (what RewardDance used for inference-time scaling).
- noise_gradient: ReNO-style gradient ascent on the initial noise through sampling, decoding and a
  differentiable reward, with the Gaussian-shell regulariser 0.01 (0.5 |z|^2 - (d - 1) log |z|).
- tree: diffusion tree search (DTS*, tree.py): a tree of stochastic denoising paths grown where the verifier's
  soft-Bellman backed-up values lead (greedy descent with a UCT bonus).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..generators.protocol import Generator, initial_latent, noised, seeded_noise
from ..generators.sampling import CallCounter, euler_step, sample
from ..rewards.protocol import Reward
from .pruning import pruning_for, sample_pool
from .tree import tree_search

Progress = Callable[[int, int, "BestSoFar"], None]  # (denoiser calls spent, budget, the best candidate so far)
StopCheck = Callable[[], bool]  # True: finish now and return the best so far (a user pressed stop)
CandidateSink = Callable[["Candidate", torch.Tensor], None]  # (candidate, its image [H, W, 3] / [T, H, W, 3] on CPU)


@dataclass
class Candidate:
    """One scored candidate: which round produced it, its score, and the calls spent when it was scored."""

    round: int
    score: float
    denoiser_calls: int
    scorer_calls: int


@dataclass
class BestSoFar:
    """The best candidate at some point of a search (what a caller keeps if the search is cut short)."""

    score: float
    latent: torch.Tensor
    noise: torch.Tensor
    image: torch.Tensor


@dataclass
class SearchResult:
    """The best result and how it was found."""

    latent: torch.Tensor  # [1, ...] the final (sigma 0) latent
    noise: torch.Tensor  # [1, ...] its initial noise (for search over paths: the root trajectory's noise)
    image: torch.Tensor  # [1, H, W, 3]
    score: float
    history: list[Candidate] = field(default_factory=list)
    denoiser_calls: int = 0
    scorer_calls: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # total, denoiser, scorer, backward (gradient search)
    stopped: bool = False  # True when a stop request ended the search before its budget was spent
    early: list[Candidate] = field(default_factory=list)  # early pruning: every candidate scored at the pruning step


class Tracker:
    """Counts calls and time, records candidates and keeps the best one."""

    def __init__(
        self,
        generator: Generator,
        reward: Reward,
        budget: int,
        progress: Progress | None = None,
        should_stop: StopCheck | None = None,
        on_candidate: CandidateSink | None = None,
    ):
        if budget < 1:
            raise ValueError(f"budget must be at least 1 denoiser call, got {budget}")
        self.generator, self.reward, self.budget, self.progress = generator, reward, budget, progress
        self.should_stop, self.on_candidate = should_stop, on_candidate
        self.stopped = False
        self.calls = CallCounter()
        self.history: list[Candidate] = []
        self.early: list[Candidate] = []  # scored at a pruning step (not final, so never the best)
        self.best: tuple[float, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.time = {"denoiser": 0.0, "scorer": 0.0, "backward": 0.0}  # model time; the rest is machinery
        self.started = time.perf_counter()

    def left(self) -> int:
        """Denoiser calls still allowed (0 once a stop was requested and something has been scored)."""
        if self.best is not None and self.should_stop is not None and self.should_stop():
            self.stopped = True
        return 0 if self.stopped else self.budget - self.calls.denoiser

    def sample(self, noise: torch.Tensor, steps: int, **kw: Any) -> torch.Tensor:
        t = time.perf_counter()
        with torch.no_grad():
            out = sample(self.generator, noise, steps, self.calls, **kw)
        self.time["denoiser"] += time.perf_counter() - t
        return out

    def score(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rewards [B], images) of final latents."""
        t = time.perf_counter()
        with torch.no_grad():
            images = self.generator.decode(latents)
            scores = self.reward(images).float().cpu()
        self.calls.scorer += latents.shape[0]
        self.time["scorer"] += time.perf_counter() - t
        return scores, images

    def record(
        self, round_: int, latents: torch.Tensor, noises: torch.Tensor, scores: torch.Tensor, images: torch.Tensor
    ) -> None:
        """Append each candidate to the history (and hand it with its image to `on_candidate`); keep the best."""
        for i in range(latents.shape[0]):
            candidate = Candidate(round_, float(scores[i]), self.calls.denoiser, self.calls.scorer)
            self.history.append(candidate)
            if self.on_candidate is not None:
                self.on_candidate(candidate, images[i].detach().float().cpu())
            if self.best is None or float(scores[i]) > self.best[0]:
                self.best = (float(scores[i]), latents[i : i + 1], noises[i : i + 1], images[i : i + 1])
        if self.progress is not None:
            self.progress(self.calls.denoiser, self.budget, BestSoFar(*self.best))

    def result(self) -> SearchResult:
        score, latent, noise, image = self.best
        seconds = dict(self.time, total=time.perf_counter() - self.started)
        return SearchResult(
            latent,
            noise,
            image,
            score,
            self.history,
            self.calls.denoiser,
            self.calls.scorer,
            seconds,
            self.stopped,
            self.early,
        )


def best_of_n(
    generator: Generator,
    reward: Reward,
    steps: int,
    budget: int,
    seed: int = 0,
    batch: int = 8,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    on_candidate: CandidateSink | None = None,
    prune_at: int | float | None = None,
    keep_fraction: float | None = None,
) -> SearchResult:
    """floor(budget / steps) seeds, sampled `batch` at a time; the best by reward.

    With `prune_at` (a step index, or a fraction of the steps) all seeds that the budget allows with pruning are
    sampled to that step, scored on their predicted clean images, and the top `keep_fraction` (default 0.25, at
    least one) finished: the largest n with n (prune_at + 1) + keep(n) (steps - prune_at - 1) <= budget.
    """
    pruning = pruning_for(prune_at, keep_fraction, steps)
    t = Tracker(generator, reward, budget, progress, should_stop, on_candidate)
    n = max(1, budget // steps if pruning is None else pruning.pool_size(budget, steps))
    sample_pool(t, seeded_noise(generator, n, seed), steps, 0, batch, pruning)
    return t.result()


def random_search(
    generator: Generator,
    reward: Reward,
    steps: int,
    budget: int,
    seed: int = 0,
    first_pool: int = 2,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    on_candidate: CandidateSink | None = None,
    prune_at: int | float | None = None,
    keep_fraction: float | None = None,
) -> SearchResult:
    """Pools of fresh seeds doubling in size (2, 4, 8, ...) while the budget lasts.

    With `prune_at` each pool is pruned as in best_of_n (a pool's size counts its candidates before pruning; the
    last pool is the largest that fits the calls left).
    """
    pruning = pruning_for(prune_at, keep_fraction, steps)
    t = Tracker(generator, reward, budget, progress, should_stop, on_candidate)
    pool, round_ = first_pool, 0
    while t.left() >= steps:
        n = min(pool, t.left() // steps) if pruning is None else pruning.pool_size(t.left(), steps, cap=pool)
        noises = seeded_noise(generator, n, seed + 7919 * round_)
        sample_pool(t, noises, steps, round_, n, pruning)
        pool, round_ = pool * 2, round_ + 1
    return t.result()


def zero_order(
    generator: Generator,
    reward: Reward,
    steps: int,
    budget: int,
    seed: int = 0,
    neighbours: int = 4,
    correlation: float = 0.95,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    on_candidate: CandidateSink | None = None,
) -> SearchResult:
    """Start from one seed; each round samples norm-preserving neighbours of the pivot and moves to a better one."""
    t = Tracker(generator, reward, budget, progress, should_stop, on_candidate)
    g = torch.Generator().manual_seed(seed + 1)
    pivot = seeded_noise(generator, 1, seed)
    latent = t.sample(pivot, steps)
    scores, images = t.score(latent)
    t.record(0, latent, pivot, scores, images)
    pivot_score, round_ = float(scores[0]), 1
    while t.left() >= steps:
        n = min(neighbours, t.left() // steps)
        u = pivot.flatten() / pivot.norm()
        w = torch.randn((n, u.numel()), generator=g).to(u.device)
        w = w - (w @ u)[:, None] * u[None]  # orthogonal to the pivot direction
        w = w / w.norm(dim=1, keepdim=True)
        cand = (pivot.norm() * (correlation * u[None] + math.sqrt(1 - correlation**2) * w)).view(
            n, *generator.noise_shape
        )
        latents = t.sample(cand, steps)
        scores, images = t.score(latents)
        t.record(round_, latents, cand, scores, images)
        best = int(scores.argmax())
        if float(scores[best]) > pivot_score:
            pivot, pivot_score = cand[best : best + 1], float(scores[best])
        round_ += 1
    return t.result()


def search_over_paths(
    generator: Generator,
    reward: Reward,
    steps: int,
    budget: int,
    seed: int = 0,
    paths: int | None = None,
    children: int = 2,
    branch_steps: tuple[int, ...] | None = None,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    on_candidate: CandidateSink | None = None,
) -> SearchResult:
    """N trajectories; at each branch step every kept state branches into children (its predicted clean
    image re-noised at that step's sigma with fresh noise), and the best `paths` states by the verifier on
    their predicted clean images continue. `paths` defaults to as many as the budget of denoiser calls
    allows: paths x (steps + branches x (1 + children)) <= budget."""
    t = Tracker(generator, reward, budget, progress, should_stop, on_candidate)
    sigmas = generator.sigmas(steps).to(generator.device)
    if branch_steps is None:
        branch_steps = tuple(sorted({max(1, steps // 4), max(1, steps // 2)}))
    branch_steps = tuple(b for b in branch_steps if 0 <= b < steps)
    if paths is None:
        paths = max(1, budget // (steps + len(branch_steps) * (1 + children)))
    g = torch.Generator().manual_seed(seed + 2)
    roots = seeded_noise(generator, paths, seed)
    x, root_of = initial_latent(generator, roots, sigmas[0]), list(range(paths))
    for i in range(steps):
        if i in branch_steps and t.left() > 0:
            tt = time.perf_counter()
            with torch.no_grad():
                x0 = generator.denoise(x, sigmas[i])
                fresh = torch.randn((x.shape[0] * children, *generator.noise_shape), generator=g).to(x.device)
                x = noised(generator, x0.repeat_interleave(children, 0), fresh, sigmas[i])
                pred = generator.denoise(x, sigmas[i])  # the children's predicted clean latents
            t.calls.denoiser += x0.shape[0] + x.shape[0]
            t.time["denoiser"] += time.perf_counter() - tt
            root_of = [r for r in root_of for _ in range(children)]
            scores, _ = t.score(pred)  # prune by the verifier on predicted clean images
            keep = scores.argsort(descending=True)[:paths].tolist()
            x, root_of = x[keep], [root_of[k] for k in keep]
        tt = time.perf_counter()
        with torch.no_grad():
            x, _ = euler_step(generator, x, sigmas[i], sigmas[i + 1], t.calls)
        t.time["denoiser"] += time.perf_counter() - tt
    scores, images = t.score(x)
    t.record(len(branch_steps), x, roots[root_of], scores, images)
    return t.result()


def noise_gradient(
    generator: Generator,
    reward: Reward,
    steps: int,
    budget: int,
    seed: int = 0,
    lr: float = 5.0,
    regularizer: float = 0.01,
    clip: float = 0.1,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    on_candidate: CandidateSink | None = None,
) -> SearchResult:
    """ReNO-style: ascend the reward w.r.t. the initial noise through sampling and decoding (few-step models)."""
    if not getattr(reward, "differentiable", False):
        raise ValueError(
            "noise_gradient needs a differentiable reward (a RewardModel pointwise reward or a "
            "differentiable statistic); use another algorithm for pairwise or remote rewards"
        )
    t = Tracker(generator, reward, budget, progress, should_stop, on_candidate)
    z = seeded_noise(generator, 1, seed).requires_grad_(True)
    opt = torch.optim.SGD([z], lr=lr, momentum=0.9, nesterov=True)
    d = z.numel()
    round_ = 0
    while t.left() >= steps:
        tt = time.perf_counter()
        latent = sample(generator, z, steps, t.calls)
        t.time["denoiser"] += time.perf_counter() - tt
        ts = time.perf_counter()
        images = generator.decode(latent)
        score = reward(images)[0]
        t.calls.scorer += 1
        t.time["scorer"] += time.perf_counter() - ts
        t.record(round_, latent.detach(), z.detach().clone(), score.detach().view(1), images.detach())
        tb = time.perf_counter()
        norm = z.norm()
        loss = -score + regularizer * (0.5 * norm**2 - (d - 1) * torch.log(norm)) / d
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([z], clip)
        opt.step()
        t.time["backward"] += time.perf_counter() - tb
        round_ += 1
    return t.result()


ALGORITHMS: dict[str, Callable[..., SearchResult]] = {
    "best_of_n": best_of_n,
    "random_search": random_search,
    "zero_order": zero_order,
    "search_over_paths": search_over_paths,
    "noise_gradient": noise_gradient,
    "tree": tree_search,
}
