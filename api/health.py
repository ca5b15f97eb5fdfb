"""`GET /health` (the process answers) and `GET /ready` (its backing services answer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from api.metrics import HttpMetrics
from core.errors import NapalmError

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]


async def _run_probe(probe: Probe, limit: float) -> str | None:
    """None when the probe answers in time, else a short reason safe to show."""
    try:
        await asyncio.wait_for(probe(), limit)
    except TimeoutError:
        return f"no answer within {limit:g}s"
    except NapalmError as exc:
        return exc.message
    except Exception as exc:  # a probe must never take /ready down with it
        log.warning("readiness probe failed: %s", type(exc).__name__)
        return type(exc).__name__
    return None


def health_routes(
    probes: Mapping[str, Probe], timeout: float, metrics: HttpMetrics
) -> list[web.RouteDef]:
    last_state: dict[str, bool] = {}

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        names = list(probes)
        results = await asyncio.gather(*(_run_probe(probes[n], timeout) for n in names))
        checks = {n: ("ok" if r is None else r) for n, r in zip(names, results, strict=True)}
        down = [n for n, r in zip(names, results, strict=True) if r is not None]
        for name in names:
            up = name not in down
            if last_state.get(name, True) != up:
                log.warning("%s is %s", name, "back" if up else f"unavailable: {checks[name]}")
            last_state[name] = up
        metrics.ready.set(0 if down else 1)
        if down:
            reason = "; ".join(f"{n}: {checks[n]}" for n in down)
            return web.json_response(
                {
                    "status": "unavailable",
                    "checks": checks,
                    "error": {"code": "unavailable", "message": reason},
                },
                status=503,
            )
        return web.json_response({"status": "ready", "checks": checks})

    return [web.get("/health", health), web.get("/ready", ready)]
