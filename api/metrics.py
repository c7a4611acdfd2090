"""``/metrics`` in the Prometheus text format: requests by route template, method and
status, with latency histograms — enough for a dashboard and an alert, no extra
dependency.

Every label a request sets comes from a fixed set, so no caller (none needs a token to be
counted) can grow the label sets, the process's memory and the ``/metrics`` answer without
bound: the route is one of the app's route templates (``/api/v1/lineage``), never a raw
path, else ``unmatched``; the method one of HTTP's, else ``OTHER``; the status is the one
the app answered with, or 499 where the caller hung up before its request had
arrived (nginx's "client closed request": no answer was sent, and it is not the
server's error)."""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# HTTP's methods (RFC 9110, and PATCH); the server passes on whatever token a caller sends.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
                     "CONNECT"})
OTHER_METHOD = "OTHER"
UNMATCHED = "unmatched"
CLIENT_CLOSED_REQUEST = 499


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER_METHOD


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


class _Templates:
    """The app's route templates, each with the pattern of the paths it serves: read at
    the first request (routes are added after the middleware), from its OpenAPI paths and
    the routes outside them (the docs pages)."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._known: dict[str, re.Pattern[str]] | None = None

    def of(self, scope: Any) -> str:
        """The route template of a request. FastAPI leaves the route it served in
        ``scope["route"]``; a request refused before routing (401, 403, 413), strawberry's
        route ("" under the /graphql prefix) and Starlette's own routes (``/docs``) do
        not, so their path is matched against the templates: a path a caller made up
        matches none and is never a label."""
        if self._known is None:
            paths = [*self._app.openapi()["paths"],
                     *(getattr(route, "path", None) for route in self._app.routes)]
            self._known = {path: compile_path(path)[0] for path in paths
                           if isinstance(path, str) and path}
        served = getattr(scope.get("route"), "path", None)
        if served in self._known:
            return served
        return next((template for template, pattern in self._known.items()
                     if pattern.match(scope["path"])), UNMATCHED)


class _Measure:
    """Pure ASGI (not BaseHTTPMiddleware, which would buffer and reorder the body handling
    of the middlewares around it): time each HTTP request and record its route template."""

    def __init__(self, app: Any, metrics: Metrics, templates: _Templates) -> None:
        self.app, self.metrics, self.templates = app, metrics, templates

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begun = time.perf_counter()
        status: int | None = None

        async def record_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        except ClientDisconnect:
            status = status or CLIENT_CLOSED_REQUEST
            raise
        finally:
            self.metrics.observe(method_label(scope["method"]), self.templates.of(scope),
                                 status or 500, time.perf_counter() - begun)


def install_metrics(app: FastAPI) -> Metrics:
    metrics = Metrics()
    started = time.time()
    # Added last, so outermost: it counts the auth and body-limit refusals too.
    app.add_middleware(_Measure, metrics=metrics, templates=_Templates(app))

    @app.get("/metrics", tags=["probes"], response_class=PlainTextResponse)
    async def metrics_route(request: Request) -> PlainTextResponse:
        """Prometheus text format: requests, latency, store readiness, ingest turns, query
        threads."""
        ready = 1.0 if await run_in_threadpool(request.app.state.store.ready) else 0.0
        gauges = {"lineagegraph_store_ready": ready,
                  "lineagegraph_uptime_seconds": round(time.time() - started, 3)}
        # Is ingest queueing (api/admission.py)? An app without ingest routes has no budget.
        budget = getattr(request.app.state, "ingest_budget", None)
        if budget is not None:
            gauges |= {"lineagegraph_ingest_body_bytes_in_flight": budget.used,
                       "lineagegraph_ingest_budget_bytes": budget.limit,
                       "lineagegraph_ingest_waiting": budget.waiting}
        # Are queries waiting for a thread (api/query_workers.py)?
        workers = getattr(request.app.state, "query_workers", None)
        if workers is not None:
            gauges |= {"lineagegraph_query_workers": workers.count,
                       "lineagegraph_query_work_running": workers.running,
                       "lineagegraph_query_work_waiting": workers.waiting}
        return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4")

    return metrics
