"""``/metrics`` in the Prometheus text format: requests by route template, method and
status, with latency histograms — enough for a dashboard and an alert, no extra
dependency. Route templates (``/api/v1/lineage``), never raw paths, keep the label set
bounded."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Match

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.sums: dict[tuple[str, str], float] = defaultdict(float)
        self.counts: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, str(status))] += 1
            key = (method, route)
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[key][i] += 1
            self.sums[key] += seconds
            self.counts[key] += 1

    def render(self, extra: dict[str, float]) -> str:
        lines = ["# HELP lineagegraph_requests_total HTTP requests by route and status.",
                 "# TYPE lineagegraph_requests_total counter"]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(f'lineagegraph_requests_total{{method="{method}",route="{route}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP lineagegraph_request_seconds HTTP request latency.",
                      "# TYPE lineagegraph_request_seconds histogram"]
            for (method, route), counts in sorted(self.buckets.items()):
                labels = f'method="{method}",route="{route}"'
                for bound, n in zip(BUCKETS, counts, strict=True):
                    lines.append(
                        f'lineagegraph_request_seconds_bucket{{{labels},le="{bound}"}} {n}')
                total = self.counts[(method, route)]
                lines.append(f'lineagegraph_request_seconds_bucket{{{labels},le="+Inf"}} {total}')
                lines.append(f"lineagegraph_request_seconds_sum{{{labels}}} "
                             f"{self.sums[(method, route)]:.6f}")
                lines.append(f"lineagegraph_request_seconds_count{{{labels}}} {total}")
        for name, value in sorted(extra.items()):
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


class _Measure:
    """Pure ASGI (not BaseHTTPMiddleware, which would buffer and reorder the body handling
    of the middlewares around it): time each HTTP request and record its route template,
    which the router leaves in ``scope["route"]``."""

    def __init__(self, app: Any, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begun = time.perf_counter()
        status = 500

        async def record_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.observe(scope["method"], self._template(scope), status,
                                 time.perf_counter() - begun)

    def _template(self, scope: Any) -> str:
        """The route template: FastAPI's routes leave themselves in ``scope["route"]``;
        a request refused before routing (401, 403, 413) and Starlette's own routes
        (``/docs``, ``/openapi.json``) do not, so those are matched here."""
        route = scope.get("route")
        if route is None:
            route = _match(self.routes, scope)
        if route is None:
            return "unmatched"
        # strawberry's router registers its route as "" under the /graphql prefix
        return getattr(route, "path", "") or scope["path"]


def _match(routes: list[BaseRoute], scope: Any) -> BaseRoute | None:
    """The route serving this path: a full match, else one for another method (405)."""
    partial = None
    for route in routes:
        found, _ = route.matches(scope)
        if found == Match.FULL:
            return route
        if found == Match.PARTIAL and partial is None:
            partial = route
    return partial


def install_metrics(app: FastAPI) -> Metrics:
    metrics = Metrics()
    started = time.time()
    # Added last, so outermost: it counts the auth and body-limit refusals too.
    app.add_middleware(_Measure, metrics=metrics, routes=app.router.routes)

    @app.get("/metrics", tags=["probes"], response_class=PlainTextResponse)
    async def metrics_route(request: Request) -> PlainTextResponse:
        """Prometheus text format: requests, latency, store readiness."""
        ready = 1.0 if await run_in_threadpool(request.app.state.store.ready) else 0.0
        return PlainTextResponse(metrics.render({
            "lineagegraph_store_ready": ready,
            "lineagegraph_uptime_seconds": round(time.time() - started, 3),
        }), media_type="text/plain; version=0.0.4")

    return metrics
