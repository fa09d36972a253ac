"""Prometheus metrics (``GET /metrics``, text exposition format) with prometheus-client.

One registry per app (several apps in one test process never share counters). Counted at the
front door (:class:`RequestMetrics`, outside the tile fast path): requests and their latency
by route *family* — a fixed set, so a caller cannot grow the label space. Read at scrape time
(:class:`StateCollector`): tile answers by source (cache hits and misses, counted by the tile
routes), the database pools, the replicas' lag. Fed by the process's event hub: the change
events' lag and the features they announce (the ingest rate). ``/metrics`` answers admin and operator keys only (docs/scaling.md): route names and
rates say how the city's systems are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# The first path segment names the family; /collections/{id}/… is told apart by its tail.
FAMILIES = frozenset(
    (
        "addresses",
        "asyncapi.json",
        "catalog",
        "dashboards",
        "events",
        "healthz",
        "layers",
        "maps",
        "metrics",
        "query",
        "readyz",
        "static",
        "stats",
        "styles",
        "tiles",
        "whats-here",
    )
)
COLLECTION_TAILS = ("items", "tiles", "grid", "changes", "history", "styles", "tilejson")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def route_family(path: str) -> str:
    """The family of a request path: ``items``, ``tiles``, ``maps`` … or ``other``."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "landing"
    if parts[0] == "collections":
        for tail in COLLECTION_TAILS:
            if tail in parts[2:]:
                return "items" if tail == "history" else tail
        return "collections"
    return parts[0] if parts[0] in FAMILIES else "other"


class Metrics:
    """The app's registry and the instruments the front door feeds."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ioc_requests",
            "HTTP requests answered, by route family, method and status class.",
            ("family", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "ioc_request_seconds",
            "Time from a request's arrival to its answer's first byte, by route family.",
            ("family",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.event_lag = Histogram(
            "ioc_event_lag_seconds",
            "From a write's transaction to its change event reaching this process.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.features = Counter(
            "ioc_features_changed",
            "Features written (created, replaced, patched, deleted, fed) as announced by the "
            "change events, by layer operation; rate() of it is the ingest rate.",
            ("op",),
            registry=self.registry,
        )


class RequestMetrics:
    """Plain ASGI: count every HTTP request and its latency (to the answer's start)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        family = route_family(scope["path"])
        seen = False

        async def counted(message) -> None:
            nonlocal seen
            if message["type"] == "http.response.start" and not seen:
                seen = True
                self._answered(scope, family, message, started)
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            if not seen:  # the client went away, or the app failed before answering
                self.metrics.requests.labels(family, scope["method"], "none").inc()

    def _answered(self, scope, family: str, message, started: float) -> None:
        metrics = self.metrics
        metrics.latency.labels(family).observe(time.perf_counter() - started)
        status = f"{message['status'] // 100}xx"
        metrics.requests.labels(family, scope["method"], status).inc()


class StateCollector(Collector):
    """What the app's state holds, read at each scrape."""

    def __init__(self, app) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        state = self.app.state
        pool = getattr(state, "pool", None)
        if pool is None:  # not started yet
            return
        size = GaugeMetricFamily(
            "ioc_db_pool_connections",
            "Open database connections, by pool and use.",
            labels=("pool", "use"),
        )
        _pool_gauges(size, "primary", pool)
        tiles = CounterMetricFamily(
            "ioc_tile_answers",
            "Tiles answered, by where they came from: memory or disk (cache hits), database "
            "(a render: a miss) or none (no layer at that zoom).",
            labels=("source",),
        )
        for source, count in getattr(state, "tile_sources", {}).items():
            tiles.add_metric([source], count)
        yield tiles
        reads = getattr(state, "reads", None)
        if reads is not None:
            lag = GaugeMetricFamily(
                "ioc_replica_lag_seconds",
                "Each replica's lag at its last check (+Inf when it does not answer).",
                labels=("replica",),
            )
            up = GaugeMetricFamily(
                "ioc_replica_up", "1 when the replica answered its last check.", labels=("replica",)
            )
            for replica in reads.replicas:
                lag.add_metric([replica.name], replica.lag)
                up.add_metric([replica.name], 1.0 if replica.up else 0.0)
                if replica.pool is not None:
                    _pool_gauges(size, replica.name, replica.pool)
            yield lag
            yield up
            routed = CounterMetricFamily(
                "ioc_replica_routed_reads",
                "Reads that could go to a replica, by where they went (the primary: no replica "
                "within the lag budget holding the layers' changes).",
                labels=("to",),
            )
            routed.add_metric(["replica"], reads.replica_reads)
            routed.add_metric(["primary"], reads.fallbacks)
            yield routed
            lost = CounterMetricFamily(
                "ioc_replica_lost_reads",
                "Reads whose replica connection failed (the replica died between two checks), "
                "each made again on the primary.",
                labels=("replica",),
            )
            for replica in reads.replicas:
                lost.add_metric([replica.name], replica.lost)
            yield lost
        yield size


def _pool_gauges(family: GaugeMetricFamily, name: str, pool) -> None:
    total, idle = pool.get_size(), pool.get_idle_size()
    family.add_metric([name, "busy"], total - idle)
    family.add_metric([name, "idle"], idle)
    family.add_metric([name, "max"], pool.get_max_size())


async def watch_events(hub, metrics: Metrics) -> None:
    """Observe every change event this process receives: its lag and its features. Runs
    until cancelled; a subscription closed for falling behind is taken again."""
    while True:
        sub = hub.subscribe()
        try:
            while (event := await sub.queue.get()) is not None:
                at = event.at if event.at.tzinfo else event.at.replace(tzinfo=UTC)
                metrics.event_lag.observe(max(0.0, (datetime.now(UTC) - at).total_seconds()))
                metrics.features.labels(event.op).inc(event.count)
        finally:
            hub.unsubscribe(sub)
        await asyncio.sleep(0.1)  # closed (hub stopping or fell behind): subscribe again


@contextlib.asynccontextmanager
async def watching(hub, metrics: Metrics):
    """Run :func:`watch_events` for the app's lifetime."""
    task = asyncio.create_task(watch_events(hub, metrics), name="ioc-metrics-events")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
