"""Prometheus metrics of the HTTP layer and the `/metrics` route.

Each application has its own CollectorRegistry (no process-wide singleton), so two apps in one
test process do not share counters. Labels are bounded: the route template, never the raw path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "napalmsky_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "napalmsky_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            registry=registry,
        )
        self.ready = Gauge(
            "napalmsky_ready",
            "1 when the last /ready check found every backing service answering, else 0.",
            registry=registry,
        )


class GaugeCollector(Collector):
    """Gauges read when /metrics is scraped (nothing is counted on the hot path): the event
    loop's live asyncio tasks, and whatever the application adds with `add`."""

    def __init__(self) -> None:
        self._gauges: list[tuple[str, str, Callable[[], float]]] = [
            ("napalmsky_asyncio_tasks", "asyncio tasks alive on this node's event loop.",
             _task_count),
        ]

    def add(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._gauges.append((name, documentation, read))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation, read in self._gauges:
            yield GaugeMetricFamily(name, documentation, value=read())
        loop = GaugeMetricFamily("napalmsky_event_loop",
                                 "1, labelled with the event loop this node runs on (uvloop "
                                 "where installed, else asyncio).", labels=["loop"])
        loop.add_metric([_loop_name()], 1)
        yield loop


def _loop_name() -> str:
    try:
        return type(asyncio.get_running_loop()).__module__.partition(".")[0]
    except RuntimeError:  # scraped outside the loop (never in the server)
        return "none"


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped outside the loop (never in the server)
        return 0.0


def new_registry() -> tuple[CollectorRegistry, GaugeCollector]:
    """A registry with process metrics (CPU seconds, resident memory, open descriptors) and
    the scrape-time gauges, which the caller may extend."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    gauges = GaugeCollector()
    registry.register(gauges)
    return registry, gauges


def _route_label(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: HttpMetrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = _route_label(request)
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.duration.labels(route).observe(time.perf_counter() - started)

    return middleware


def metrics_routes(registry: CollectorRegistry) -> list[web.RouteDef]:
    async def metrics_view(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get("/metrics", metrics_view)]
