"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

try:  # the *_created series only add noise to a scrape
    from prometheus_client import disable_created_metrics

    disable_created_metrics()
except ImportError:  # prometheus_client < 0.17
    pass

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Requests, errors by type, batches, batch size, queue / compute / end-to-end time, tokens, prefix caches."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "rewarddance_"
        self.requests = Counter(
            p + "requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.errors = Counter(p + "errors", "error responses by error type", ["type"], registry=r)
        self.latency = Histogram(
            p + "request_latency_seconds",
            "end-to-end request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            p + "queue_seconds",
            "time a request waited before its batch ran",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            p + "compute_seconds", "model time per batch", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batches = Counter(p + "batches", "batches executed", ["model"], registry=r)
        self.batch_requests = Histogram(
            p + "batch_requests", "requests merged into one batch", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batched_queries = Counter(
            p + "batched_queries", "queries (images / pairs) scored in batches", ["model"], registry=r
        )
        self.tokens = Counter(p + "tokens", "tokens run through the model", ["model"], registry=r)
        self.queue_depth = Gauge(p + "queue_depth", "requests waiting per model", ["model"], registry=r)
        self.rejected = Counter(
            p + "rejected_queue_full", "requests answered 503 because the queue was full", ["model"], registry=r
        )
        self.abandoned = Counter(
            p + "abandoned", "requests dropped before compute (client gone or timed out)", ["model"], registry=r
        )
        self.model_loads = Counter(p + "model_loads", "model loads", ["model"], registry=r)
        self.model_unloads = Counter(p + "model_unloads", "model unloads by reason", ["model", "reason"], registry=r)
        self.load_seconds = Histogram(p + "model_load_seconds", "time to load a model", ["model"], registry=r)
        r.register(_AverageBatchSize(self))
        self._prefix_caches = _PrefixCaches()
        r.register(self._prefix_caches)

    def watch_models(self, models: Callable[[], dict[str, Any]]) -> None:
        """Report the prefix cache of each model `models()` returns (name -> RewardModel) at every scrape."""
        self._prefix_caches.models = models

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class _AverageBatchSize:
    """Requests per executed batch, like Triton's average batch size."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        family = GaugeMetricFamily(
            "rewarddance_average_batch_requests", "requests per executed batch", labels=["model"]
        )
        counts = {
            s.labels["model"]: s.value
            for m in self.metrics.batch_requests.collect()
            for s in m.samples
            if s.name.endswith("_count")
        }
        sums = {
            s.labels["model"]: s.value
            for m in self.metrics.batch_requests.collect()
            for s in m.samples
            if s.name.endswith("_sum")
        }
        for model, count in counts.items():
            family.add_metric([model], sums.get(model, 0.0) / count if count else 0.0)
        yield family


class _PrefixCaches:
    """Each loaded model's cross-call prefix cache, read at scrape time: hits, misses, evictions, entries, bytes."""

    COUNTERS = (("hits", "prefix KV caches reused"), ("misses", "prefixes not cached"), ("evictions", "evicted"))
    GAUGES = (
        ("entries", "prefixes cached"),
        ("bytes", "bytes of cached prefix KV caches"),
        ("max_bytes", "the prefix cache's byte budget"),
    )

    def __init__(self) -> None:
        self.models: Callable[[], dict[str, Any]] = dict

    def collect(self):
        p = "rewarddance_prefix_cache_"
        families = {k: CounterMetricFamily(p + k, help_, labels=["model"]) for k, help_ in self.COUNTERS}
        families |= {k: GaugeMetricFamily(p + k, help_, labels=["model"]) for k, help_ in self.GAUGES}
        for name, model in list(self.models().items()):
            cache = getattr(model, "prefix_cache", None)
            if cache is None:
                continue
            for key, value in cache.stats().items():
                if key in families:
                    families[key].add_metric([name], value)
        yield from families.values()
