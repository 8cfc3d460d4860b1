"""Vision features computed once per distinct visual: equal to the pixel path (logits and gradients) for every
family and prompt layout, and the vision tower sees each distinct visual exactly once per call."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES
from helpers import TowerCounter
from PIL import Image as PILImage

from rewarddance.backend import FewShotExample, RewardModel, Video
from rewarddance.backend.media import to_visuals
from rewarddance.backend.reward_model import compare_queries, score_queries, tournament_queries
from rewarddance.backend.scoring.scorer import Scorer

LAYOUTS = ("pointwise", "pairwise", "few_shot", "tournament", "video")


@pytest.fixture(scope="module")
def photos(photo_paths) -> list:
    """The sample photos as small PIL images of different sizes (fast forwards; prefixes grouped at any length)."""
    out = []
    for i, path in enumerate(photo_paths):
        img = PILImage.open(path).convert("RGB")
        img.thumbnail((96 + 16 * i, 96 + 16 * i))
        out.append(img)
    return out


def layout_queries(rm: RewardModel, layout: str, photos: list) -> list:
    """The queries of one prompt layout over the sample photos (and a tensor image / clips)."""
    config = rm.config
    if layout == "pointwise":
        return score_queries([*photos[:3], torch.rand(70, 90, 3)], "a cat", config)
    if layout == "pairwise":
        return compare_queries(photos[1:], photos[0], ["a cat", "a dog on a long walk", "x", "y z"], config)
    if layout == "few_shot":
        examples = [FewShotExample(photos[0], True), FewShotExample(photos[1], False, "a dog")]
        return score_queries(photos[2:], "a cat", config, examples)
    if layout == "tournament":
        return tournament_queries(photos[:3], "a cat", config)[0]
    torch.manual_seed(0)
    clips = [Video(torch.rand(6, 48, 64, 3), fps=4.0) for _ in range(3)]
    return score_queries(clips, "a moving cat", config) + compare_queries(clips[1:], clips[0], "a cat", config)


def logits(rm: RewardModel, queries: list, reuse: bool, prefix_reuse: bool = True) -> torch.Tensor:
    """Last-position logits from a scorer without a cross-call cache, features shared or pixels per forward."""
    scorer = Scorer(rm.vlm)
    scorer.reuse_features = reuse
    with torch.no_grad():
        return scorer.last_logits(scorer.prepare(queries), 800, prefix_reuse, min_prefix_tokens=1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_shared_features_equal_the_pixel_path(reward_models, family, layout, photos):
    rm = reward_models(family)
    queries = layout_queries(rm, layout, photos)
    shared = logits(rm, queries, reuse=True)
    plain = logits(rm, queries, reuse=False)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rm.read_scores(shared, rm.config), rm.read_scores(plain, rm.config), atol=1e-5, rtol=0)
    whole = logits(rm, queries, reuse=True, prefix_reuse=False)  # every query in full, features shared
    torch.testing.assert_close(whole, logits(rm, queries, reuse=False, prefix_reuse=False), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_tournament_runs_the_vision_tower_once_per_distinct_image(reward_models, family, photos):
    rm = reward_models(family)
    queries = tournament_queries(photos[:4], "a cat", rm.config)[0]
    scorer = Scorer(rm.vlm)
    distinct = scorer.encode_visuals(to_visuals(photos[:4]))
    expected = sum(int(v.pixel_values.shape[0]) for v in distinct.values())
    with TowerCounter(rm) as shared, torch.no_grad():
        scorer.last_logits(scorer.prepare(queries), 800, min_prefix_tokens=1)
    assert shared.rows == expected  # 12 ordered pairs, yet every image through the tower once
    assert scorer.stats["vision_encodes"] == 4
    scorer.reuse_features = False
    with TowerCounter(rm) as plain, torch.no_grad():
        scorer.last_logits(scorer.prepare(queries), 800, min_prefix_tokens=1)
    assert plain.rows > 2 * expected  # the pixel path re-encodes each candidate in every pair


def gradients(rm: RewardModel, reuse: bool) -> list[torch.Tensor]:
    """Gradients of pointwise and pairwise rewards w.r.t. image tensors (a reference shared by two candidates)."""
    model = RewardModel(rm.vlm, rm.config, prefix_cache_bytes=0)
    model.scorer.reuse_features = reuse
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 56, 84, 3, generator=gen).requires_grad_()
    reference = torch.rand(64, 64, 3, generator=gen).requires_grad_()
    candidates = [torch.rand(64, 64, 3, generator=gen).requires_grad_() for _ in range(2)]
    total = model.reward(images, "a cat").sum() + model.compare_reward(candidates, [reference], "a cat").sum()
    total.backward()
    return [images.grad, reference.grad, *(c.grad for c in candidates)]


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_features_keep_the_reward_gradients(reward_models, family):
    rm = reward_models(family)
    shared, plain = gradients(rm, reuse=True), gradients(rm, reuse=False)
    for a, b in zip(shared, plain):
        assert a is not None and a.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-6 * float(b.abs().max()), rtol=1e-4)
