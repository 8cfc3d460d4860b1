"""Reasoning-first verdicts read from the generation's own KV cache equal the old full re-forward of each judged
query, cost one forward per decode batch and never run the vision tower again."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from helpers import TowerCounter
from PIL import Image as PILImage
from test_generation import generation_config

from rewarddance.backend import RewardModel, reward_model
from rewarddance.backend.media import to_visuals
from rewarddance.backend.scoring import generation
from rewarddance.backend.scoring.config import ScoringConfig
from rewarddance.backend.scoring.prompts import pairwise_query, pointwise_query

FAMILIES = ("qwen2_5_vl", "internvl")
REASONING = {"cot": "reasoning_first", "reason_tokens": 6, "min_prefix_tokens": 4}


@pytest.fixture(scope="module")
def photos(photo_paths) -> list:
    """Three sample photos as small PIL images (short prompts: fast generation)."""
    out = []
    for i, path in enumerate(photo_paths[:3]):
        img = PILImage.open(path).convert("RGB")
        img.thumbnail((64 + 16 * i, 64 + 16 * i))
        out.append(img)
    return out


@pytest.fixture
def fresh(reward_models):
    """family -> a RewardModel on the session's weights without a cross-call prefix cache (fresh stats)."""
    return lambda family: RewardModel(reward_models(family).vlm, prefix_cache_bytes=0)


def mixed_queries(photos, config):
    """Pointwise queries of two lengths and two pairwise ones sharing a reference (a shared prefix, start > 0)."""
    visuals = to_visuals(photos)
    prompts = ["a cup of coffee on a wooden table in the morning light", "x"]
    point = [pointwise_query(v, p, config) for v, p in zip(visuals[1:], prompts)]
    return point + [pairwise_query(visuals[0], v, "a cat", config) for v in visuals[1:]]


def judge(rm, queries, config, monkeypatch):
    """Judgements through the cache read, the stats that call added, and the tower rows of its verdict forwards."""
    rows: list[int] = []
    real = generation._cached_verdicts

    def counted(*args):
        with TowerCounter(rm) as tower:
            out = real(*args)
        rows.append(tower.rows)
        return out

    monkeypatch.setattr(generation, "_cached_verdicts", counted)
    before = Counter(rm.scorer.stats)
    with torch.no_grad():
        result = rm.run(queries, config)
    monkeypatch.setattr(generation, "_cached_verdicts", real)
    stats = Counter(rm.scorer.stats)
    stats.subtract(before)
    assert rows == [0] * len(rows)  # the verdicts ran no visual through the vision tower
    return result, stats


def full_reforward(rm, queries, config):
    """The old path's judgements (every judged query run again over prompt, visuals and reasoning), and its stats."""
    rm.verdicts_from_cache = False
    before = Counter(rm.scorer.stats)
    try:
        with torch.no_grad():
            result = rm.run(queries, config)
    finally:
        rm.verdicts_from_cache = True
    stats = Counter(rm.scorer.stats)
    stats.subtract(before)
    return result, stats


def assert_same_judgements(cached, full) -> None:
    """Same reasonings, scores (and spread) within 1e-5."""
    assert cached.reasons == full.reasons
    torch.testing.assert_close(cached.scores, full.scores, atol=1e-5, rtol=0)
    if full.spread is not None:
        torch.testing.assert_close(cached.spread, full.spread, atol=1e-5, rtol=0)


def assert_one_verdict_forward_per_batch(stats) -> None:
    """Each decode batch (one or more prefill `_forward`s) added one verdict forward and nothing ran in full."""
    assert stats["verdict_forwards"] == stats["decode_batches"] >= 1
    assert stats["decode_batches"] <= stats["forwards"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sampling", [{}, {"samples": 3, "temperature": 1.0, "seed": 4}], ids=["greedy", "k3"])
def test_cached_verdicts_equal_the_full_reforward(fresh, photos, family, sampling, monkeypatch):
    rm = fresh(family)
    config = ScoringConfig(**REASONING, **sampling)
    queries = mixed_queries(photos, config)
    cached, stats = judge(rm, queries, config, monkeypatch)
    full, full_stats = full_reforward(rm, queries, config)
    assert_same_judgements(cached, full)
    assert_one_verdict_forward_per_batch(stats)
    assert stats["prefix_forwards"] >= 1  # the pairwise pair decoded after a shared prefix (start > 0)
    assert stats["vision_encodes"] < full_stats["vision_encodes"]
    assert (cached.spread is not None) == ("samples" in sampling)


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_that_stop_early_see_none_of_the_pads_fed_after(fresh, photos, family, monkeypatch):
    rm = fresh(family)
    config = ScoringConfig(**REASONING, max_batch_tokens=10**6)
    queries = mixed_queries(photos, config)[:3]
    free = rm.generate(rm.scorer.prepare(queries), config)
    with torch.no_grad():  # query 1's first greedy token ends its reasoning at once; pads follow it in the cache
        stop_token = int(rm.scorer.last_logits(rm.scorer.prepare(queries[1:2]), 10**6)[0].argmax())
    with generation_config(rm, eos_token_id=[stop_token]):
        cached, stats = judge(rm, queries, config, monkeypatch)
        full, _ = full_reforward(rm, queries, config)
    assert len(cached.reasons[1]) < len(free[1][0])  # stopped early, while another row went on
    assert any(r == f[0] for r, f in zip(cached.reasons, free))
    assert_same_judgements(cached, full)
    assert_one_verdict_forward_per_batch(stats)


@pytest.mark.parametrize("family", FAMILIES)
def test_judged_ids_that_leave_the_fed_ids_early_read_from_the_cut(fresh, photos, family, monkeypatch):
    rm = fresh(family)
    config = ScoringConfig(**REASONING, samples=2, temperature=1.0)
    queries = mixed_queries(photos, config)
    # as if each reasoning wrote its own verdict line halfway: the judged query keeps only the first half
    monkeypatch.setattr(reward_model, "reasoning_before_verdict", lambda text: text[: len(text) // 2].rstrip())
    cached, stats = judge(rm, queries, config, monkeypatch)
    assert_same_judgements(cached, full_reforward(rm, queries, config)[0])
    assert_one_verdict_forward_per_batch(stats)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sampling", [{}, {"samples": 3, "temperature": 1.0, "seed": 4}], ids=["greedy", "k3"])
def test_prefill_batches_decode_together_as_they_would_alone(fresh, photos, family, sampling, monkeypatch):
    """A token budget that fits one query per prefill: the batches' caches are widened and decoded as one batch
    (fewer decode batches than prefills), with the same texts and scores as each batch decoded on its own."""
    rm = fresh(family)
    queries = mixed_queries(photos, ScoringConfig(**REASONING))
    longest = max(len(p) for p in rm.scorer.prepare(queries)) + REASONING["reason_tokens"]
    config = ScoringConfig(**REASONING, **sampling, max_batch_tokens=longest * sampling.get("samples", 1))
    together, stats = judge(rm, queries, config, monkeypatch)
    assert stats["decode_batches"] < stats["forwards"]  # several prefills decoded as one batch
    assert_one_verdict_forward_per_batch(stats)
    monkeypatch.setattr(generation, "DECODE_CACHE_BUDGETS", 0)  # every prefill batch decodes alone
    alone, alone_stats = judge(rm, queries, config, monkeypatch)
    assert alone_stats["decode_batches"] == alone_stats["forwards"]
    assert_same_judgements(together, alone)
    assert_same_judgements(together, full_reforward(rm, queries, config)[0])


def test_rows_the_cache_cannot_serve_run_in_full(fresh, photos, monkeypatch):
    rm = fresh("qwen2_5_vl")
    config = ScoringConfig(**REASONING)
    queries = mixed_queries(photos, config)
    expected, _ = full_reforward(rm, queries, config)
    reusable = generation._reusable_prefix
    pointwise_only = lambda j, c, s: None if len(j.spans) > 1 else reusable(j, c, s)  # pairwise rows in full
    monkeypatch.setattr(generation, "_reusable_prefix", pointwise_only)
    cached, stats = judge(rm, queries, config, monkeypatch)
    assert_same_judgements(cached, expected)
    assert stats["forwards"] > stats["verdict_forwards"] >= 1
    monkeypatch.setattr(generation, "_reusable_prefix", lambda *args: None)  # no row at all: no verdict forward
    cached, stats = judge(rm, queries, config, monkeypatch)
    assert_same_judgements(cached, expected)
    assert stats["verdict_forwards"] == 0


def test_verdicts_under_gradients_keep_the_full_forward(fresh):
    rm = fresh("qwen2_5_vl")
    image = torch.rand(1, 64, 64, 3, requires_grad=True)
    before = rm.scorer.stats["verdict_forwards"]
    reward = rm.reward(image, "a cat", cot="reasoning_first", reason_tokens=3)
    reward.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert rm.scorer.stats["verdict_forwards"] == before
