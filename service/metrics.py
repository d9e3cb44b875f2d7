"""Prometheus metrics of one app instance (own registry: several apps in one process do not clash)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class Metrics:
    """Every metric the service exports at ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds, ...
        PlatformCollector(registry=r)  # python_info
        GCCollector(registry=r)  # python_gc_*
        self.http_requests = Counter("search_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram(
            "search_request_seconds", "End-to-end latency of search work", ["endpoint", "pipeline"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.stage_seconds = Histogram(
            "search_stage_seconds", "Latency of one stage over one batch", ["pipeline", "stage"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.cache_requests = Counter("search_cache_requests", "Cache lookups by outcome", ["cache", "outcome"], registry=r)
        self.cache_errors = Counter("search_cache_errors", "Cache backend errors (the cache was bypassed)", ["backend", "op"], registry=r)
        self.rerank_batch = Histogram(
            "search_rerank_batch_size", "Candidates given to a reranking stage per call", ["pipeline", "stage"], buckets=BATCH_BUCKETS, registry=r
        )
        self.errors = Counter("search_errors", "Failed or refused requests by kind", ["kind"], registry=r)
        self.degraded = Counter("search_degraded", "Stages that failed open", ["pipeline", "stage"], registry=r)
        self.reloads = Counter("search_index_reloads", "Index reload attempts by outcome", ["outcome"], registry=r)
        self.index_version = Gauge("search_index_version_info", "Served index versions (value 1)", ["collection", "index", "version"], registry=r)

    def cache_outcome(self, cache: str, outcome: str) -> None:
        self.cache_requests.labels(cache, outcome).inc()

    def stage_timings(self, pipeline: str, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(pipeline, stage).observe(ms / 1000)

    def set_index_versions(self, served: dict[str, dict[str, str]]) -> None:
        """``{collection: {index: version}}`` replaces the exported version gauges."""
        self.index_version.clear()
        for collection, indexes in served.items():
            for index, version in indexes.items():
                self.index_version.labels(collection, index, version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
