"""Early pruning (TTSnap-style) for best-of-N and random search: how the noise search prunes.

Every candidate of a pool is sampled to the pruning step `i` (a step index, or a fraction of the steps); the
denoiser call of step `i` gives its predicted clean latent x0 at sigma_i, which is decoded and scored by the
same reward. The top `keep` of the pool, keep = max(1, floor(keep_fraction * n)), are finished from there to
sigma 0 (reusing that call's Euler update) and scored as usual; the others stop.

Budget, in denoiser calls, of a pool of n candidates pruned at step i of `steps`:
    cost(n) = n * (i + 1) + keep(n) * (steps - i - 1)
(a pruned candidate costs the i + 1 steps it ran, a kept one all `steps`). A search takes the largest n with
cost(n) <= the budget left. When keep(n) = n nothing is pruned and the pool is sampled exactly as without
pruning (no intermediate scoring), so keep_fraction 1 is plain best-of-N / random search.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..generators.sampling import euler_step

if TYPE_CHECKING:
    from .algorithms import Tracker

DEFAULT_KEEP_FRACTION = 0.25


@dataclass(frozen=True)
class Pruning:
    """Prune at step index `step` (1 <= step < steps), keeping the top `keep_fraction` of each pool."""

    step: int
    keep_fraction: float

    def keep(self, n: int) -> int:
        """How many of a pool of n candidates are finished (at least 1)."""
        return max(1, min(n, math.floor(self.keep_fraction * n + 1e-9)))

    def cost(self, n: int, steps: int) -> int:
        """Denoiser calls of a pool of n candidates: n (step + 1) + keep(n) (steps - step - 1)."""
        return n * (self.step + 1) + self.keep(n) * (steps - self.step - 1)

    def pool_size(self, budget: int, steps: int, cap: int | None = None) -> int:
        """The largest n (at most `cap`) whose cost fits the budget; 0 when not even one candidate fits."""
        n = 0
        while (cap is None or n < cap) and self.cost(n + 1, steps) <= budget:
            n += 1
        return n


def prune_step(prune_at: int | float, steps: int) -> int:
    """The step index of `prune_at`: an int step in [1, steps - 1], or a float fraction of the steps in (0, 1)."""
    if steps < 2:
        raise ValueError(f"prune_at needs at least 2 sampling steps to prune between, got steps {steps}")
    if isinstance(prune_at, bool) or not isinstance(prune_at, (int, float)):
        raise ValueError(f"prune_at must be a step index (int) or a fraction of the steps (float), got {prune_at!r}")
    if isinstance(prune_at, int):
        if not 1 <= prune_at <= steps - 1:
            raise ValueError(
                f"prune_at must be a step index from 1 to {steps - 1} (steps {steps}), or a fraction in (0, 1); "
                f"got {prune_at}"
            )
        return prune_at
    if not 0 < prune_at < 1:
        raise ValueError(f"prune_at as a fraction of the steps must lie in (0, 1), got {prune_at}")
    return min(steps - 1, max(1, round(prune_at * steps)))


def pruning_for(prune_at: int | float | None, keep_fraction: float | None, steps: int) -> Pruning | None:
    """The checked pruning options (None: no pruning); keep_fraction defaults to DEFAULT_KEEP_FRACTION."""
    if prune_at is None:
        if keep_fraction is not None:
            raise ValueError("keep_fraction needs prune_at (the step at which candidates are pruned)")
        return None
    keep_fraction = DEFAULT_KEEP_FRACTION if keep_fraction is None else keep_fraction
    if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float)) or not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction!r}")
    return Pruning(prune_step(prune_at, steps), float(keep_fraction))


def sample_pool(
    t: Tracker,
    noises: torch.Tensor,
    steps: int,
    round_: int,
    batch: int,
    pruning: Pruning | None,
) -> None:
    """Sample a pool `batch` at a time, pruned by `pruning` (None: all finished), and record the finished ones.

    Candidates scored at the pruning step are appended to `t.early` (in seed order); the finished ones are recorded
    in seed order. A stop request during the pruning pass keeps the candidates sampled so far.
    """
    n = noises.shape[0]
    if pruning is None or pruning.keep(n) == n:
        for start in range(0, n, batch):
            if start and t.left() <= 0:
                break
            chunk = noises[start : start + batch]
            latents = t.sample(chunk, steps)
            t.record(round_, latents, chunk, *t.score(latents))
        return
    states, scores = _pruning_pass(t, noises, steps, round_, batch, pruning.step)
    order = scores.argsort(descending=True, stable=True)[: pruning.keep(scores.shape[0])]
    kept = order.sort().values.tolist()  # finished in seed order
    for start in range(0, len(kept), batch):
        if start and t.left() <= 0:
            break
        idx = kept[start : start + batch]
        latents = t.sample(noises[idx], steps, start=pruning.step + 1, x=states[idx])
        t.record(round_, latents, noises[idx], *t.score(latents))


def _pruning_pass(
    t: Tracker, noises: torch.Tensor, steps: int, round_: int, batch: int, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample every candidate through step `step`; (states after that step, scores of its predicted clean images)."""
    from .algorithms import Candidate

    states, scores = [], []
    sigmas = t.generator.sigmas(steps).to(noises.device)
    for start in range(0, noises.shape[0], batch):
        if start and t.should_stop is not None and t.should_stop():
            t.stopped = True  # finish the best of those screened so far
            break
        x = t.sample(noises[start : start + batch], steps, stop=step)
        tt = time.perf_counter()
        with torch.no_grad():
            x, x0 = euler_step(t.generator, x, sigmas[step], sigmas[step + 1], t.calls)
        t.time["denoiser"] += time.perf_counter() - tt
        chunk_scores, _ = t.score(x0)
        t.early.extend(Candidate(round_, float(s), t.calls.denoiser, t.calls.scorer) for s in chunk_scores)
        states.append(x)
        scores.append(chunk_scores)
    return torch.cat(states), torch.cat(scores)
