"""Diffusion tree search (DTS*): the budget is counted exactly and never exceeded, backups equal a hand
computation, a branching step is the Euler step plus fresh noise, results are deterministic per seed and rescore
to their score, small budgets are best-of-N sample for sample, and at equal budget it finds more than best-of-N."""

from __future__ import annotations

import math

import pytest
import torch

from rewarddance.backend.generators.sampling import euler_step
from rewarddance.backend.generators.tiny_flow import train_tiny_flow
from rewarddance.backend.rewards import ColourReward
from rewarddance.backend.search.algorithms import ALGORITHMS, best_of_n
from rewarddance.backend.search.tree import Tree, TreeNode, soft_value, tree_options, tree_search, tree_step

STEPS = 8


@pytest.fixture(scope="module")
def generator():
    return train_tiny_flow(steps=150)


class Counted:
    """A generator that counts the samples it denoises (what the budget counts)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.parameterization, self.noise_shape, self.device = inner.parameterization, inner.noise_shape, inner.device

    def sigmas(self, steps):
        return self.inner.sigmas(steps)

    def denoise(self, x, sigma):
        self.calls += x.shape[0]
        return self.inner.denoise(x, sigma)

    def decode(self, latents):
        return self.inner.decode(latents)


class EpsToy:
    """An eps-parameterized toy denoiser (x0_hat = x / (1 + sigma^2) / 2) on 3 x 4 x 4 latents."""

    parameterization, noise_shape, device = "eps", (3, 4, 4), torch.device("cpu")

    def sigmas(self, steps):
        return torch.cat([torch.linspace(10.0, 0.1, steps), torch.zeros(1)])

    def denoise(self, x, sigma):
        return x / (1 + sigma**2) / 2

    def decode(self, latents):
        return ((latents.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)


def test_the_budget_is_counted_exactly_and_never_exceeded(generator):
    for budget, steps in ((8, 8), (37, 8), (100, 8), (128, 8), (50, 4), (3, 1)):
        counted = Counted(generator)
        result = tree_search(counted, ColourReward(0), steps, budget, seed=1, batch=3)
        assert result.denoiser_calls == counted.calls <= budget
        assert result.denoiser_calls > budget - steps  # nothing affordable was left unspent
        assert result.scorer_calls == len(result.history)


def test_soft_value_is_the_log_mean_exp_between_max_and_mean():
    assert soft_value([0.3, 0.1], 0.1) == pytest.approx(0.1 * math.log((math.exp(3) + math.exp(1)) / 2))
    assert soft_value([0.3, 0.1, 0.2], 1e-4) == pytest.approx(0.3, abs=1e-3)
    assert soft_value([0.3, 0.1, 0.2], 1e4) == pytest.approx(0.2, abs=1e-4)
    assert soft_value([500.0, -500.0], 1e-3) == pytest.approx(500.0 - 1e-3 * math.log(2))  # no overflow


def test_backup_values_equal_a_hand_computation_on_a_tiny_tree():
    """root -> a (level 0) -> b1, b2 (level 1) -> one leaf each; root -> c -> d -> a leaf; steps 2."""
    tau = 0.1
    tree = Tree(2, tree_options(2, 64, children=3, temperature=tau, root_children=2))
    a = TreeNode(0, tree.root)
    b1, b2, c = TreeNode(1, a), TreeNode(1, a), TreeNode(0, tree.root)
    d = TreeNode(1, c)
    tree.root.children, a.children, c.children = [a, c], [b1, b2], [d]
    leaves = [TreeNode(2, b1), TreeNode(2, b2), TreeNode(2, d)]
    for leaf, score in zip(leaves, (0.3, 0.1, 0.25), strict=True):
        leaf.parent.children.append(leaf)
        tree.add_leaf(leaf, score)
    v_a = tau * math.log((math.exp(0.3 / tau) + math.exp(0.1 / tau)) / 2)
    assert b1.value == 0.3 and b2.value == 0.1 and d.value == c.value == 0.25  # one child: its value
    assert a.value == pytest.approx(v_a)
    assert tree.root.value == pytest.approx(tau * math.log((math.exp(v_a / tau) + math.exp(0.25 / tau)) / 2))
    assert (tree.root.visits, a.visits, c.visits) == (3, 2, 1)
    assert b1.closed and d.closed and not a.closed and not c.closed  # level 1 does not branch; a, c may
    assert tree.select(calls_left=10) is c  # greedy: c (0.25) beats a (v_a = 0.237...)
    assert tree.select(calls_left=0) is None  # a child of c costs one call
    b1.value = 0.5
    tree.backup(a)
    assert tree.select(calls_left=10) is a


def test_a_branching_step_is_the_euler_step_plus_fresh_noise(generator):
    for gen in (generator, EpsToy()):
        sigmas = gen.sigmas(4)
        x = torch.randn(2, *gen.noise_shape, generator=torch.Generator().manual_seed(0)) * sigmas[1]
        euler, x0 = euler_step(gen, x, sigmas[1], sigmas[2])
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(tree_step(gen, x, x0, sigmas[1], sigmas[2], 1e-8, z), euler, atol=1e-5)
        noisy = tree_step(gen, x, x0, sigmas[1], sigmas[2], 0.6, z)
        eps = (euler - (x0 if gen.parameterization == "eps" else (1 - sigmas[2]) * x0)) / sigmas[2]
        expected = euler + sigmas[2] * (0.6 * z + (math.sqrt(1 - 0.36) - 1) * eps)
        assert torch.allclose(noisy, expected, atol=1e-5)
        assert torch.equal(tree_step(gen, x, x0, sigmas[3], sigmas[4], 0.6, z), x0)  # to sigma 0: x0 for any z


def test_deterministic_per_seed_and_the_best_rescores_to_its_score(generator):
    reward = ColourReward(1)
    a, b = tree_search(generator, reward, STEPS, 96, seed=4), tree_search(generator, reward, STEPS, 96, seed=4)
    assert torch.equal(a.latent, b.latent) and a.history == b.history and a.score == b.score
    other = tree_search(generator, reward, STEPS, 96, seed=5)
    assert not torch.equal(a.latent, other.latent)
    assert torch.equal(a.image, generator.decode(a.latent))
    assert a.score == pytest.approx(float(reward(generator.decode(a.latent))[0]), abs=1e-6)
    assert a.score == max(c.score for c in a.history) and len(a.history) > 96 // STEPS  # branches cost less


def test_a_budget_of_root_seeds_only_is_best_of_n_sample_for_sample(generator):
    plain = best_of_n(generator, ColourReward(0), STEPS, 64, seed=2)
    tree = tree_search(generator, ColourReward(0), STEPS, 64, seed=2, root_children=8)
    assert torch.equal(tree.latent, plain.latent) and torch.equal(tree.noise, plain.noise)
    assert [c.score for c in tree.history] == [c.score for c in plain.history]


def test_eps_generators_search_within_budget():
    result = tree_search(EpsToy(), ColourReward(0), 5, 40, seed=0, children=3)
    assert result.denoiser_calls <= 40 and math.isfinite(result.score) and result.latent.shape == (1, 3, 4, 4)


def test_at_equal_budget_it_beats_best_of_n_on_average(generator):
    reward = ColourReward(0)
    seeds = range(4)
    tree = [tree_search(generator, reward, STEPS, 128, seed=s).score for s in seeds]
    plain = [best_of_n(generator, reward, STEPS, 128, seed=s).score for s in seeds]
    assert sum(tree) / 4 > sum(plain) / 4 + 0.01, (tree, plain)


def test_it_is_registered_and_bad_knobs_are_named(generator):
    assert ALGORITHMS["tree"] is tree_search
    bad = {
        "children": dict(children=1),
        "eta": dict(eta=0.0),
        "temperature": dict(temperature=0.0),
        "exploration": dict(exploration=-1.0),
        "root_children": dict(root_children=0),
        "batch": dict(batch=0),
    }
    for knob, kwargs in bad.items():
        with pytest.raises(ValueError, match=f"^{knob}"):
            tree_search(generator, ColourReward(), STEPS, 16, **kwargs)
    with pytest.raises(ValueError, match="eta"):
        tree_search(generator, ColourReward(), STEPS, 16, eta=1.5)
    with pytest.raises(ValueError, match="budget"):
        tree_search(generator, ColourReward(), STEPS, 0)


def parsed(*flags: str):
    """`rewarddance search` flags parsed (no checks run)."""
    import argparse

    from rewarddance.backend.cli.search import add_search_arguments

    p = argparse.ArgumentParser()
    add_search_arguments(p)
    return p.parse_args(["--pipeline", "p", "--prompt", "x", "--steps", "8", "--budget", "64", *flags])


def test_cli_tree_flags_are_checked_and_named():
    import re

    from rewarddance.backend.cli.errors import CLIError
    from rewarddance.backend.cli.search import tree_kwargs

    assert tree_kwargs(parsed("--algorithm", "tree")) == {}
    args = parsed("--algorithm", "tree", "--children", "3", "--eta", "0.5", "--root-children", "6")
    assert tree_kwargs(args) == {"children": 3, "eta": 0.5, "root_children": 6}
    args = parsed("--algorithm", "tree", "--temperature", "0.1", "--exploration", "0.5")
    assert tree_kwargs(args) == {"temperature": 0.1, "exploration": 0.5}
    bad = [
        (("--children", "3"), "--children works with --algorithm tree, not search_over_paths"),
        (("--algorithm", "tree", "--children", "1"), "--children (the most children of a tree node) must be"),
        (("--algorithm", "tree", "--root-children", "0"), "--root-children (initial seeds of the tree) must be"),
        (("--algorithm", "tree", "--eta", "0"), "--eta (the share of fresh noise in a branching step) must lie"),
        (("--algorithm", "tree", "--temperature", "-1"), "--temperature (of the soft-Bellman backup) must be"),
        (("--algorithm", "tree", "--exploration", "-1"), "--exploration (the weight of the UCT bonus) must be"),
    ]
    for flags, message in bad:
        with pytest.raises(CLIError, match=re.escape(message)):
            tree_kwargs(parsed(*flags))


def test_cli_tree_search_on_a_tiny_generator(tmp_path, capsys):
    """`rewarddance search --algorithm tree` end to end on a tiny generator and reward model directory."""
    import json

    from rewarddance.backend.cli import main

    gen, rm = tmp_path / "gen", tmp_path / "rm"
    assert main(["tiny-generator", "--out", str(gen), "--size", "56", "--steps", "3", "--width", "8"]) == 0
    assert main(["tiny-model", "--family", "qwen2_5_vl", "--out", str(rm)]) == 0
    capsys.readouterr()
    args = ["search", "--pipeline", str(gen), "--prompt", "a red fox", "--reward-model", str(rm), "--device", "cpu"]
    args += ["--algorithm", "tree", "--steps", "4", "--budget", "24", "--out", str(tmp_path / "best.png")]
    assert main([*args, "--children", "2", "--root-children", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # 2 root seeds (8 calls), then 2-child fills down the best path: 1 x 3 + 1 x 2 + ... while calls are left
    assert report["denoiser_calls"] <= 24 and report["denoiser_calls"] > 24 - 4
    assert report["score"] == max(c["score"] for c in report["history"]) and len(report["history"]) > 24 // 4
    assert main([*args, "--eta", "2"]) == 2
    assert "--eta (the share of fresh noise" in capsys.readouterr().err
