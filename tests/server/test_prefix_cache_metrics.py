"""/metrics shows each loaded model's cross-call prefix cache: hits, misses, evictions, entries and bytes."""

from __future__ import annotations

from helpers import http, png_b64, random_image

from rewarddance.backend.scoring.prefix_cache import DEFAULT_PREFIX_CACHE_BYTES


def metric(text: str, name: str) -> float:
    """The value of `name{model="qwen"}` in a Prometheus scrape."""
    lines = [line for line in text.splitlines() if line.startswith(name + '{model="qwen"}')]
    assert len(lines) == 1, f"{name} missing from /metrics:\n{text}"
    return float(lines[0].split()[-1])


def test_metrics_show_the_prefix_cache(served):
    from rewarddance.backend.server.app import SERVICE_KEY

    reference = png_b64(random_image(200, 240, seed=11))
    for seed in (12, 13):  # two requests against one reference: the second reuses its prefix
        body = {"prompt": "a cat", "reference": reference, "candidates": [png_b64(random_image(64, 64, seed=seed))]}
        status, answer, _ = http("POST", served.url + "/v1/compare", body)
        assert status == 200, answer
    text = http("GET", served.url + "/metrics")[1]
    cache = served.app[SERVICE_KEY].manager.loaded["qwen"].model.prefix_cache
    assert metric(text, "rewarddance_prefix_cache_hits_total") == cache.hits >= 1
    assert metric(text, "rewarddance_prefix_cache_misses_total") == cache.misses >= 1
    assert metric(text, "rewarddance_prefix_cache_evictions_total") == cache.evictions == 0
    assert metric(text, "rewarddance_prefix_cache_entries") == len(cache) >= 1
    assert metric(text, "rewarddance_prefix_cache_bytes") == cache.bytes > 0
    assert metric(text, "rewarddance_prefix_cache_max_bytes") == DEFAULT_PREFIX_CACHE_BYTES
