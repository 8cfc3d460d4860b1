"""Diffusion tree search (DTS*, Jain et al. 2025): a search tree over the denoising chain, grown by stochastic
steps, valued by the verifier at its leaves with soft-Bellman backups, and descended greedily.

The tree: a dummy root whose children are initial states at sigma_0 (the seeded noises of best_of_n, in order);
a node at level i holds a partially denoised state x at sigma_i; a leaf (level `steps`) is a clean sample,
valued by the reward on its decoded image.

- Branching (a stochastic step): a new child of the node x at sigma_i, with x0 = denoise(x, sigma_i) and eps
  the unit noise x implies (x = noised(x0, eps, sigma_i)), is
      x' = noised(x0, sqrt(1 - eta^2) eps + eta z, sigma_{i+1}),   z ~ N(0, I) fresh
  in the generator's parameterization (flow or eps); with eta 0 it would be the Euler (DDIM) step. The step to
  sigma 0 gives x0 for every z, so states at level steps - 1 do not branch.
- Rollout: a new child is finished by Euler steps (the ODE, as the other searches sample) down to sigma 0;
  every state on the way becomes a node (its first child is that Euler continuation). Each node keeps the
  denoiser call made at its state, so its later children cost no call for the step out of it.
- Value: a leaf's value is its score r; a node's value is the soft-Bellman backup of its children's values,
      v = temperature * log(mean_k exp(v_k / temperature))
  (temperature -> 0: their max; large: their mean), recomputed from each new leaf up to the root.
- Selection (DTS*, the greedy variant of DTS, with an optional UCT bonus): from the root, a node that branches
  and has fewer than its width of children is expanded; otherwise descend to the open child maximising
      v_k + exploration * spread * sqrt(log(N) / N_k)
  (N, N_k: leaves below the node and the child; spread: max - min of every leaf score so far, so `exploration`
  does not depend on the reward's scale; 0, the default, is pure greedy descent). Ties go to the earlier child.
  The root's width is `root_children` (default max(children, budget // (4 steps)): a quarter of best_of_n's
  seeds), every other node's `children`.
- Expansion fills the selected node's missing children at once (one batch of at most `batch`), as many as the
  budget left allows.
- Cost, in denoiser calls: a new child of a node at level i costs steps - i - 1 (the root's children cost
  `steps`). A node whose children do not fit the budget left is descended through instead; the search ends
  when nothing affordable is open, so it never spends more than the budget. The root's children are best_of_n's
  candidates, sample for sample (the same seeds and Euler steps, `batch` at a time), so with root_children =
  budget / steps (a multiple of steps) the tree is best_of_n.
- Memory: every node that may still branch keeps its state and x0 on the generator's device (two latents per
  denoiser call at most); a node is freed once its subtree is closed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..generators.protocol import Generator, initial_latent, noised, seeded_noise
from ..generators.sampling import euler_step
from ..rewards.protocol import Reward

if TYPE_CHECKING:
    from .algorithms import CandidateSink, Progress, SearchResult, StopCheck, Tracker

DEFAULT_CHILDREN = 4
DEFAULT_ETA = 0.8
DEFAULT_TEMPERATURE = 0.02
DEFAULT_EXPLORATION = 0.0


@dataclass(eq=False)
class TreeNode:
    """A state of the denoising tree: level -1 the dummy root, 0 .. steps - 1 noisy states, steps a clean leaf."""

    level: int
    parent: TreeNode | None = None
    x: torch.Tensor | None = None  # [1, ...] the state at sigma_level (kept while the node may branch)
    x0: torch.Tensor | None = None  # [1, ...] denoise(x, sigma_level), the one call made for this node
    noise: torch.Tensor | None = None  # [1, ...] the initial noise of the path through this node
    children: list[TreeNode] = field(default_factory=list)
    value: float | None = None  # the soft value (a leaf: its score)
    visits: int = 0  # leaves below (a leaf: 1)
    closed: bool = False  # nothing left to expand in this subtree


def soft_value(values: list[float], temperature: float) -> float:
    """The soft-Bellman backup temperature * log(mean(exp(v / temperature))) of children's values."""
    top = max(values)
    total = sum(math.exp((v - top) / temperature) for v in values)
    return top + temperature * math.log(total / len(values))


@dataclass(frozen=True)
class TreeOptions:
    """The checked knobs of the tree search (root_children resolved)."""

    children: int = DEFAULT_CHILDREN
    eta: float = DEFAULT_ETA
    temperature: float = DEFAULT_TEMPERATURE
    exploration: float = DEFAULT_EXPLORATION
    root_children: int = DEFAULT_CHILDREN


def tree_options(
    steps: int,
    budget: int,
    children: int = DEFAULT_CHILDREN,
    eta: float = DEFAULT_ETA,
    temperature: float = DEFAULT_TEMPERATURE,
    exploration: float = DEFAULT_EXPLORATION,
    root_children: int | None = None,
) -> TreeOptions:
    """The tree search's knobs, checked, with messages naming the knob; root_children None: its default."""
    if not _integer(steps) or steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps!r}")
    if not _integer(children) or children < 2:
        raise ValueError(f"children (the most children of a tree node) must be an int of at least 2, got {children!r}")
    if root_children is None:
        root_children = max(children, budget // (4 * steps))
    elif not _integer(root_children) or root_children < 1:
        raise ValueError(
            f"root_children (initial seeds of the tree) must be an int of at least 1, got {root_children!r}"
        )
    if not _number(eta) or not 0 < eta <= 1:
        raise ValueError(f"eta (the share of fresh noise in a branching step) must lie in (0, 1], got {eta!r}")
    if not _number(temperature) or not 0 < temperature < math.inf:
        raise ValueError(f"temperature (of the soft-Bellman backup) must be a positive number, got {temperature!r}")
    if not _number(exploration) or not 0 <= exploration < math.inf:
        raise ValueError(f"exploration (the weight of the UCT bonus) must be a number >= 0, got {exploration!r}")
    return TreeOptions(children, float(eta), float(temperature), float(exploration), root_children)


def _integer(value: object) -> bool:
    """A real int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    """A real int or float (not a bool, not NaN)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value == value


class Tree:
    """The denoising tree's bookkeeping: which node to expand next, and the soft-Bellman backup."""

    def __init__(self, steps: int, options: TreeOptions):
        self.steps, self.options = steps, options
        self.root = TreeNode(level=-1)
        self.low: float | None = None  # the lowest and highest leaf scores seen (the spread of the UCT bonus)
        self.high: float | None = None

    def branches(self, node: TreeNode) -> bool:
        """Whether a node's children differ (the root, and states above the last step)."""
        return node.level < self.steps - 1

    def child_cost(self, node: TreeNode) -> int:
        """Denoiser calls of one new child of `node` rolled out to sigma 0."""
        return self.steps - (node.level + 1)

    def width(self, node: TreeNode) -> int:
        """The most children of `node` (the root: root_children)."""
        return self.options.root_children if node.level < 0 else self.options.children

    def expandable(self, node: TreeNode) -> bool:
        """Whether `node` may get another child."""
        return self.branches(node) and len(node.children) < self.width(node)

    def select(self, calls_left: int) -> TreeNode | None:
        """The node to expand next (DTS*: greedy descent with a UCT bonus); None when no expansion fits."""
        node = self.root
        while True:
            if self.expandable(node) and self.child_cost(node) <= calls_left:
                return node
            open_children = [c for c in node.children if not c.closed and c.value is not None]
            if not open_children:
                return None
            node = max(open_children, key=lambda c: self.priority(node, c))

    def priority(self, parent: TreeNode, child: TreeNode) -> float:
        """The child's value plus its exploration bonus."""
        spread = 0.0 if self.low is None else self.high - self.low
        bonus = math.sqrt(math.log(max(parent.visits, 1)) / child.visits)
        return child.value + self.options.exploration * spread * bonus

    def add_leaf(self, leaf: TreeNode, score: float) -> None:
        """Value a new leaf by its score and back the value up to the root."""
        self.low = score if self.low is None else min(self.low, score)
        self.high = score if self.high is None else max(self.high, score)
        leaf.value, leaf.visits, leaf.closed = score, 1, True
        self.backup(leaf.parent)

    def backup(self, node: TreeNode | None) -> None:
        """Recompute soft values, visits and closedness from `node` up to the root."""
        while node is not None:
            valued = [c.value for c in node.children if c.value is not None]
            node.value = soft_value(valued, self.options.temperature) if valued else None
            node.visits = sum(c.visits for c in node.children)
            node.closed = not self.expandable(node) and all(c.closed for c in node.children)
            if node.closed:
                node.x = node.x0 = None  # never stepped again: free its tensors
            node = node.parent


def implied_noise(generator: Generator, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The unit noise eps with x = noised(x0, eps, sigma) (sigma > 0)."""
    if generator.parameterization == "flow":
        return (x - (1 - sigma) * x0) / sigma
    return (x - x0) / sigma


def tree_step(
    generator: Generator,
    x: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    eta: float,
    z: torch.Tensor,
) -> torch.Tensor:
    """One stochastic step: x0 re-noised to sigma_next with sqrt(1 - eta^2) of x's noise and eta of fresh z."""
    eps = implied_noise(generator, x, x0, sigma)
    return noised(generator, x0, math.sqrt(1 - eta**2) * eps + eta * z, sigma_next)


def tree_search(
    generator: Generator,
    reward: Reward,
    steps: int,
    budget: int,
    seed: int = 0,
    children: int = DEFAULT_CHILDREN,
    eta: float = DEFAULT_ETA,
    temperature: float = DEFAULT_TEMPERATURE,
    exploration: float = DEFAULT_EXPLORATION,
    root_children: int | None = None,
    batch: int = 8,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    on_candidate: CandidateSink | None = None,
) -> SearchResult:
    """DTS*: grow a tree of denoising paths where the verifier's backed-up values lead; the best leaf found.

    `children` caps a node's children, `root_children` the root's (the initial seeds; default max(children,
    budget // (4 steps))), `eta` is the share of fresh noise in a branching step, `temperature` that of the
    soft-Bellman backup, `exploration` the weight of the UCT bonus (0: greedy), `batch` the most children
    rolled out together. The result's `noise` is the best path's initial noise: it replays the latent only when
    that path never branched (one of the root's Euler samples), so use the latent itself.
    """
    from .algorithms import Tracker

    options = tree_options(steps, budget, children, eta, temperature, exploration, root_children)
    if not _integer(batch) or batch < 1:
        raise ValueError(f"batch must be an int of at least 1, got {batch!r}")
    t = Tracker(generator, reward, budget, progress, should_stop, on_candidate)
    tree = Tree(steps, options)
    sigmas = generator.sigmas(steps).to(generator.device)
    g = torch.Generator().manual_seed(seed + 3)
    round_ = 0
    while t.left() > 0:
        node = tree.select(t.left())
        if node is None:
            break
        count = min(tree.width(node) - len(node.children), t.left() // tree.child_cost(node), batch)
        leaves, latents, noises = expand(t, tree, node, count, sigmas, seed, g)
        scores, images = t.score(latents)
        t.record(round_, latents, noises, scores, images)
        for leaf, score in zip(leaves, scores.tolist(), strict=True):
            tree.add_leaf(leaf, float(score))
        round_ += 1
    return t.result()


def expand(
    t: Tracker, tree: Tree, node: TreeNode, count: int, sigmas: torch.Tensor, seed: int, g: torch.Generator
) -> tuple[list[TreeNode], torch.Tensor, torch.Tensor]:
    """Add `count` children to `node` and roll them out to sigma 0; (their leaves, final latents, initial noises)."""
    generator, eta = t.generator, tree.options.eta
    started = time.perf_counter()
    with torch.no_grad():
        if node.level < 0:  # the root: the next seeded noises
            first = len(node.children)
            noises = seeded_noise(generator, first + count, seed)[first:]
            x = initial_latent(generator, noises, sigmas[0])
        else:
            noises = node.noise.expand(count, *node.noise.shape[1:])
            z = fresh_noise(g, count, generator)
            x = tree_step(generator, node.x, node.x0, sigmas[node.level], sigmas[node.level + 1], eta, z)
        parents = [node] * count
        for level in range(node.level + 1, tree.steps):
            x_next, x0 = euler_step(generator, x, sigmas[level], sigmas[level + 1], t.calls)
            keep = level < tree.steps - 1  # a state at the last level never branches: keep no tensors
            made = [
                TreeNode(
                    level, parent, x[i : i + 1] if keep else None, x0[i : i + 1] if keep else None, noises[i : i + 1]
                )
                for i, parent in enumerate(parents)
            ]
            for parent, child in zip(parents, made, strict=True):
                parent.children.append(child)
            x, parents = x_next, made
        leaves = []
        for i, parent in enumerate(parents):
            leaf = TreeNode(tree.steps, parent, noise=noises[i : i + 1])
            parent.children.append(leaf)
            leaves.append(leaf)
    t.time["denoiser"] += time.perf_counter() - started
    return leaves, x, noises


def fresh_noise(g: torch.Generator, count: int, generator: Generator) -> torch.Tensor:
    """`count` unit Gaussian noises of the generator's shape from the tree's CPU random stream."""
    return torch.randn((count, *generator.noise_shape), generator=g).to(generator.device)
