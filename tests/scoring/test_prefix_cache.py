"""The cross-call prefix cache: LRU within a byte budget, content-hashed keys, equal to cold calls, off for gradients."""

from __future__ import annotations

import pytest
import torch

from rewarddance.backend import FewShotExample, RewardModel
from rewarddance.backend.scoring.prefix_cache import DEFAULT_PREFIX_CACHE_BYTES, PrefixCache, cache_bytes

PROMPT = "a cat"


class FakeLayer:
    """A KV layer of `tokens` fp32 keys and values."""

    def __init__(self, tokens: int):
        self.keys = torch.zeros(1, 2, tokens, 4)
        self.values = torch.zeros(1, 2, tokens, 4)


class FakeCache:
    """A two-layer KV cache: 2 x 2 x tokens x 16 x 4 bytes."""

    def __init__(self, tokens: int):
        self.layers = [FakeLayer(tokens), FakeLayer(tokens)]


def test_lru_within_the_byte_budget():
    size = cache_bytes(FakeCache(10))
    assert size == 2 * 2 * 10 * 8 * 4
    cache = PrefixCache(int(2.5 * size))
    assert cache.put(b"a", FakeCache(10)) == 0 and cache.put(b"b", FakeCache(10)) == 0
    assert cache.get(b"a") is not None  # a is now the most recently used
    assert cache.put(b"c", FakeCache(10)) == 1  # evicts b, the least recently used
    assert cache.get(b"b") is None and cache.get(b"a") is not None and cache.get(b"c") is not None
    assert cache.stats() == {
        "hits": 3,
        "misses": 1,
        "evictions": 1,
        "entries": 2,
        "bytes": 2 * size,
        "max_bytes": int(2.5 * size),
    }
    assert cache.put(b"huge", FakeCache(100)) == 0 and cache.get(b"huge") is None  # over the budget: not stored
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_bad_budgets_are_named():
    assert not PrefixCache(0).enabled and PrefixCache().max_bytes == DEFAULT_PREFIX_CACHE_BYTES
    for bad in (-1, 1.5, "1GB", True):
        with pytest.raises(ValueError, match="prefix_cache_bytes"):
            PrefixCache(bad)
    with pytest.raises(ValueError, match="prefix_cache_bytes must be a whole number"):
        RewardModel.from_pretrained("/no/such/checkpoint", prefix_cache_bytes=-1)  # checked before loading


def fresh(rm: RewardModel, max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES) -> RewardModel:
    """A RewardModel on the same loaded weights with its own prefix cache."""
    return RewardModel(rm.vlm, rm.config, prefix_cache_bytes=max_bytes)


def images(seed: int, n: int, size: tuple[int, int] = (120, 160)) -> list[torch.Tensor]:
    """`n` random image tensors of one size (equal-sized references give equal-sized prefixes)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(*size, 3, generator=gen) for _ in range(n)]


def compare(rm: RewardModel, candidates: list, reference, **kw) -> list[float]:
    """Pairwise scores with every prefix shared (short tiny-model prefixes included)."""
    return rm.compare(candidates, reference, PROMPT, min_prefix_tokens=1, **kw).scores


def test_second_call_reuses_the_prefix_and_equals_a_cold_call(reward_models):
    rm = fresh(reward_models("qwen2_5_vl"))
    cold = fresh(rm, 0)
    reference, *candidates = images(0, 4)
    first = compare(rm, candidates[:2], reference)
    stats = dict(rm.scorer.stats)
    assert stats["prefix_forwards"] == 1 and stats["prefix_cache_misses"] == 1 and len(rm.prefix_cache) == 1
    second = compare(rm, candidates[1:], reference)  # other candidates, the same reference
    assert rm.scorer.stats["prefix_forwards"] == 1  # no prefix forward
    assert rm.scorer.stats["prefix_cache_hits"] == 1
    assert rm.scorer.stats["vision_encodes"] - stats["vision_encodes"] == 2  # only the candidates were encoded
    assert first + second[1:] == pytest.approx(compare(cold, candidates, reference), rel=1e-5, abs=1e-9)
    assert compare(rm, candidates[2:], reference) == pytest.approx(second[1:], rel=1e-5)  # a single query hits too
    assert rm.scorer.stats["prefix_cache_hits"] == 2
    assert rm.scorer.stats["prefix_cache_bytes"] == rm.prefix_cache.bytes > 0
    assert cold.scorer.stats["prefix_cache_hits"] == cold.scorer.stats["prefix_cache_misses"] == 0  # 0: off


def test_few_shot_sets_and_criteria_are_cached(reward_models, photo_paths):
    rm = fresh(reward_models("qwen2_5_vl"))
    examples = [FewShotExample(photo_paths[0], True), FewShotExample(photo_paths[1], False)]
    kw = dict(few_shot=examples, criteria=["aesthetics", "plausibility"], min_prefix_tokens=1)
    first = rm.score(images(1, 2), PROMPT, **kw).scores
    again = rm.score(images(1, 2), PROMPT, **kw).scores  # equal content, new tensors
    assert rm.scorer.stats["prefix_cache_hits"] == 1 and rm.scorer.stats["prefix_forwards"] == 1
    assert again == pytest.approx(first, rel=1e-6)
    assert again == pytest.approx(fresh(rm, 0).score(images(1, 2), PROMPT, **kw).scores, rel=1e-5)


def test_byte_budget_evicts_the_least_recently_used(reward_models):
    base = reward_models("qwen2_5_vl")
    probe = fresh(base)
    a, b, c = images(2, 3)
    candidate = images(3, 1)
    compare(probe, candidate, a)
    size = probe.prefix_cache.bytes
    rm = fresh(base, int(2.5 * size))  # room for two prefixes
    for ref in (a, b, a, c):  # a is used again before c arrives, so b is the least recently used
        compare(rm, candidate, ref)
    assert rm.prefix_cache.stats()["evictions"] == 1 and len(rm.prefix_cache) == 2
    assert rm.prefix_cache.bytes == 2 * size <= rm.prefix_cache.max_bytes
    hits = rm.scorer.stats["prefix_cache_hits"]
    compare(rm, candidate, a)
    assert rm.scorer.stats["prefix_cache_hits"] == hits + 1
    compare(rm, candidate, b)  # evicted: computed again
    assert rm.scorer.stats["prefix_cache_hits"] == hits + 1 and rm.scorer.stats["prefix_cache_evictions"] == 2


def test_distinct_images_with_equal_ids_never_collide(reward_models):
    rm = fresh(reward_models("qwen2_5_vl"))
    reference, other, *candidates = images(4, 4)
    before = compare(rm, candidates, reference)
    reference.copy_(other)  # the same Python object (same id), other pixels
    after = compare(rm, candidates, reference)
    assert rm.scorer.stats["prefix_cache_hits"] == 0 and rm.scorer.stats["prefix_cache_misses"] == 2
    assert after == pytest.approx(compare(fresh(rm, 0), candidates, other), rel=1e-5)
    assert after != pytest.approx(before, rel=1e-3)


def test_gradients_never_use_the_cache(reward_models):
    rm = fresh(reward_models("qwen2_5_vl"))
    reference, *candidates = images(5, 3)
    compare(rm, candidates, reference)  # cached
    stats = rm.prefix_cache.stats()
    grad_candidates = [c.clone().requires_grad_() for c in candidates]
    rm.compare_reward(grad_candidates, [reference], PROMPT, min_prefix_tokens=1).sum().backward()
    assert rm.prefix_cache.stats() == stats
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in grad_candidates)
