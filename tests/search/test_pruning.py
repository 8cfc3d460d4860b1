"""Early pruning for best-of-N and random search: keep_fraction 1 is the plain search, the budget formula is
never exceeded, pruning screens more candidates for the same budget, and bad options are named."""

from __future__ import annotations

import re

import pytest
import torch

from rewarddance.backend.generators.sampling import sample
from rewarddance.backend.generators.tiny_flow import train_tiny_flow
from rewarddance.backend.rewards import ColourReward
from rewarddance.backend.search.algorithms import best_of_n, random_search
from rewarddance.backend.search.pruning import Pruning, prune_step, pruning_for

STEPS, BUDGET = 8, 128


@pytest.fixture(scope="module")
def generator():
    return train_tiny_flow(steps=150)


def same_search(a, b) -> None:
    """Two results are the same search: best latent and noise, scores, history, calls."""
    assert torch.equal(a.latent, b.latent) and torch.equal(a.noise, b.noise) and a.score == b.score
    assert a.history == b.history
    assert (a.denoiser_calls, a.scorer_calls) == (b.denoiser_calls, b.scorer_calls)


@pytest.mark.parametrize("search", [best_of_n, random_search])
def test_keep_fraction_one_is_the_plain_search(generator, search):
    plain = search(generator, ColourReward(0), STEPS, BUDGET, seed=3)
    for prune_at in (1, 4, 0.5):
        pruned = search(generator, ColourReward(0), STEPS, BUDGET, seed=3, prune_at=prune_at, keep_fraction=1.0)
        same_search(plain, pruned)
        assert pruned.early == []


def test_budget_formula():
    p = Pruning(step=2, keep_fraction=0.25)
    assert [p.keep(n) for n in (1, 3, 4, 31, 32)] == [1, 1, 1, 7, 8]
    assert p.cost(31, 8) == 31 * 3 + 7 * 5 == 128 and p.cost(32, 8) == 136
    assert p.pool_size(128, 8) == 31 and p.pool_size(7, 8) == 0 and p.pool_size(128, 8, cap=4) == 4
    assert Pruning(3, 0.3).keep(10) == 3 and Pruning(3, 0.7).keep(10) == 7  # no float round-down surprises


@pytest.mark.parametrize("search", [best_of_n, random_search])
def test_pruned_candidates_cost_only_their_steps(generator, search):
    for budget in (40, 100, 128):
        result = search(generator, ColourReward(0), STEPS, budget, seed=1, prune_at=2, keep_fraction=0.25)
        assert result.denoiser_calls <= budget
        early, finished = len(result.early), len(result.history)
        assert result.denoiser_calls == early * 3 + finished * 5  # every screened one ran 3 steps, kept ones 5 more
        assert result.scorer_calls == early + finished
        assert finished >= 1 and result.score == max(c.score for c in result.history)


def test_the_kept_ones_are_the_top_early_scores_finished_from_their_seed(generator):
    reward = ColourReward(0)
    result = best_of_n(generator, reward, STEPS, BUDGET, seed=4, prune_at=0.25, keep_fraction=0.25)
    assert len(result.early) == 31 and len(result.history) == 7  # prune_at 0.25 of 8 steps = step 2
    early = torch.tensor([c.score for c in result.early])
    finished = sorted(c.score for c in result.history)
    kept = sorted(early.argsort(descending=True)[:7].tolist())
    from rewarddance.backend.generators.protocol import seeded_noise

    noises = seeded_noise(generator, 31, 4)[kept]
    expected = reward(generator.decode(sample(generator, noises, STEPS))).tolist()
    assert finished == pytest.approx(sorted(expected), abs=1e-5)
    assert torch.allclose(sample(generator, result.noise, STEPS), result.latent, atol=1e-6)


@pytest.mark.parametrize("search", [best_of_n, random_search])
def test_pruning_screens_more_candidates_and_finds_at_least_the_plain_best(generator, search):
    """ColourReward's early scores predict the final ones on the tiny flow model, so screening ~30 seeds and
    finishing a quarter beats finishing 16 for the same 128 denoiser calls (fixed seeds)."""
    gains = []
    for seed in range(3):
        plain = search(generator, ColourReward(0), STEPS, BUDGET, seed=seed)
        pruned = search(generator, ColourReward(0), STEPS, BUDGET, seed=seed, prune_at=2, keep_fraction=0.25)
        assert pruned.denoiser_calls <= BUDGET and plain.denoiser_calls <= BUDGET
        assert len(pruned.early) > len(plain.history) and pruned.scorer_calls > plain.scorer_calls
        assert pruned.score >= plain.score - 1e-6  # the same image may win both, scored in other batches
        gains.append(pruned.score - plain.score)
    assert sum(gains) / len(gains) > 0.02


def test_same_seed_same_pruned_result(generator):
    a = random_search(generator, ColourReward(2), STEPS, 96, seed=5, prune_at=3, keep_fraction=0.5)
    b = random_search(generator, ColourReward(2), STEPS, 96, seed=5, prune_at=3, keep_fraction=0.5)
    same_search(a, b)
    assert a.early == b.early and len(a.early) > 0


def test_a_stop_request_keeps_the_best_finished_one(generator):
    result = best_of_n(generator, ColourReward(0), STEPS, BUDGET, seed=0, batch=4, prune_at=2, should_stop=lambda: True)
    assert result.stopped and len(result.early) == 4 and len(result.history) == 1
    assert result.denoiser_calls == 4 * 3 + 5


def test_bad_pruning_options_are_named(generator):
    assert prune_step(0.5, 8) == 4 and prune_step(0.01, 8) == 1 and prune_step(0.99, 8) == 7 and prune_step(7, 8) == 7
    assert pruning_for(None, None, 8) is None and pruning_for(2, None, 8) == Pruning(2, 0.25)
    bad = [
        ((0, None, 8), "prune_at must be a step index from 1 to 7"),
        ((8, None, 8), "prune_at must be a step index from 1 to 7"),
        ((1.0, None, 8), r"prune_at as a fraction of the steps must lie in \(0, 1\)"),
        ((0.0, None, 8), r"prune_at as a fraction"),
        (("2", None, 8), "prune_at must be a step index"),
        ((1, None, 1), "at least 2 sampling steps"),
        ((2, 0.0, 8), r"keep_fraction must lie in \(0, 1\]"),
        ((2, 1.5, 8), r"keep_fraction must lie in \(0, 1\]"),
        ((None, 0.5, 8), "keep_fraction needs prune_at"),
    ]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            pruning_for(*args)
    with pytest.raises(ValueError, match="keep_fraction"):
        best_of_n(generator, ColourReward(0), STEPS, BUDGET, prune_at=2, keep_fraction=-1.0)
    with pytest.raises(ValueError, match="prune_at"):
        random_search(generator, ColourReward(0), STEPS, BUDGET, prune_at=STEPS)


def parsed(*flags: str):
    """`rewarddance search` arguments with the given extra flags."""
    import argparse

    from rewarddance.backend.cli.search import add_search_arguments

    p = argparse.ArgumentParser()
    add_search_arguments(p)
    return p.parse_args(["--pipeline", "p", "--prompt", "x", "--steps", "8", *flags])


def test_cli_pruning_flags():
    from rewarddance.backend.cli.errors import CLIError
    from rewarddance.backend.cli.search import pruning_kwargs, search_pruning

    assert search_pruning(parsed("--algorithm", "best_of_n")) is None
    assert search_pruning(parsed("--algorithm", "best_of_n", "--prune-at", "0.25")) == Pruning(2, 0.25)
    args = parsed("--algorithm", "random_search", "--prune-at", "3", "--keep-fraction", "0.5")
    assert pruning_kwargs(args) == {"prune_at": 3, "keep_fraction": 0.5}
    bad = [
        (("--prune-at", "2"), "--prune-at works with --algorithm best_of_n or random_search, not search_over_paths"),
        (("--algorithm", "best_of_n", "--prune-at", "half"), "--prune-at must be a step index (e.g. 2) or a fraction"),
        (("--algorithm", "best_of_n", "--prune-at", "8"), "--prune-at must be a step index from 1 to 7"),
        (("--algorithm", "best_of_n", "--prune-at", "1.5"), "--prune-at as a fraction of the steps must lie in (0, 1)"),
        (("--algorithm", "best_of_n", "--prune-at", "2", "--keep-fraction", "0"), "--keep-fraction must lie in (0, 1]"),
        (("--algorithm", "best_of_n", "--keep-fraction", "0.5"), "--keep-fraction needs --prune-at"),
        (("--algorithm", "zero_order", "--keep-fraction", "0.5"), "--keep-fraction works with --algorithm"),
    ]
    for flags, message in bad:
        with pytest.raises(CLIError, match=re.escape(message)):
            search_pruning(parsed(*flags))


def test_cli_search_prunes_a_tiny_generator(tmp_path, capsys):
    """`rewarddance search --prune-at` end to end on a tiny generator and reward model directory; a bad flag is
    refused (exit 2, the flag named) before anything loads."""
    import json

    from rewarddance.backend.cli import main

    gen, rm = tmp_path / "gen", tmp_path / "rm"
    assert main(["tiny-generator", "--out", str(gen), "--size", "56", "--steps", "3", "--width", "8"]) == 0
    assert main(["tiny-model", "--family", "qwen2_5_vl", "--out", str(rm)]) == 0
    capsys.readouterr()
    args = ["search", "--pipeline", str(gen), "--prompt", "a red fox", "--reward-model", str(rm), "--device", "cpu"]
    args += ["--algorithm", "best_of_n", "--steps", "4", "--budget", "24", "--out", str(tmp_path / "best.png")]
    assert main([*args, "--prune-at", "1", "--keep-fraction", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # n (1 + 1) + floor(n / 2) (4 - 1 - 1) <= 24: n = 8 screened (16 calls), 4 finished (8 more calls)
    assert len(report["early"]) == 8 and len(report["history"]) == 4 and report["denoiser_calls"] == 24
    assert report["scorer_calls"] == 12 and report["score"] == max(c["score"] for c in report["history"])
    assert main([*args, "--prune-at", "4"]) == 2
    assert "--prune-at must be a step index from 1 to 3" in capsys.readouterr().err
