"""Prometheus metrics of the HTTP layer and the `/metrics` route.

Each application has its own CollectorRegistry (no process-wide singleton), so two apps in one
test process do not share counters. Labels are bounded: the route template, never the raw path.
"""

from __future__ import annotations

import time

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


def new_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


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
