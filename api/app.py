"""The FastAPI application: GraphQL at /graphql, REST ingest under /api/v1, health and
readiness probes, Prometheus metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from lineagegraph.graph.deadline import DeadlinePassed
from lineagegraph.graph.store import GraphStore, StoreUnavailable
from lineagegraph.graph.warmup import warm_up

from . import routes_openlineage, routes_registry
from .admission import BodyBudget
from .auth import install_auth, store_check_s
from .content_encoding import InflatingRoute, install_decompressed_limit
from .errors import GraphQLJsonErrors, install_error_handlers
from .graphql_schema import build_schema
from .graphql_types import Context
from .metrics import install_metrics
from .query_workers import QueryWorkers
from .request_ids import install_request_ids
from .settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, store: GraphStore | None = None) -> FastAPI:
    """Build the app. A given ``store`` is used as is (and left open); otherwise the app
    opens the configured one at start-up and closes it at shutdown."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = store is None
        app.state.store = store if store is not None else await run_in_threadpool(
            settings.open_store)
        # A store this app opened is about to serve: have it plan the analyses' statements
        # before the first caller waits for that (graph/warmup.py). Start-up, and with it
        # readiness, waits for it; a store handed in is warmed by whoever opened it.
        app.state.warm_up, app.state.store_started_at = {}, None
        warming = owned and settings.warm_up
        if warming:
            await run_in_threadpool(lambda: _warm(app, settings, _start_of(app.state.store)))
        # What start-up built (schema, driver, caches) lives as long as the process: move
        # it out of the collector's sight. Without this a full collection walks all of it
        # and stalls a request for ~90 ms now and then (the tail of trace latency).
        gc.freeze()
        rewarm = (asyncio.create_task(_warm_after_restarts(app, settings))
                  if warming and settings.warm_up_check_s and app.state.store_started_at
                  else None)
        try:
            yield
        finally:
            if rewarm is not None:
                rewarm.cancel()
            app.state.query_workers.close()
            if owned:
                app.state.store.close()

    app = FastAPI(title="Lineage Graph", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.ingest_budget = BodyBudget(settings.ingest_budget, settings.ingest_wait_s)
    app.state.query_workers = QueryWorkers(settings.query_worker_count)

    async def get_context(request: Request) -> Context:
        return Context(store=request.app.state.store, settings=settings,
                       workers=request.app.state.query_workers)

    # strawberry's router with JSON transport errors (api/errors.py)
    graphql = GraphQLJsonErrors(build_schema(settings), context_getter=get_context,
                                route_class=InflatingRoute)
    app.state.graphql_methods = graphql.methods
    app.include_router(graphql, prefix="/graphql")
    app.include_router(routes_openlineage.router)
    app.include_router(routes_registry.router)
    install_error_handlers(app)
    install_decompressed_limit(app)
    install_auth(app, settings)  # bearer tokens on every route but /healthz; body limit
    install_metrics(app)  # after install_auth: outside it, so refusals are counted too
    install_request_ids(app)  # outermost: every answer carries one, refusals too

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    async def readyz(request: Request) -> JSONResponse:
        """The store answers a query. Also what the start-up warm-up took, and whether a
        rebuild of the request-count rollup is under way (or stopped half-way), when
        request counts are partial."""
        store: GraphStore = request.app.state.store

        def probe() -> tuple[bool, str | None]:
            try:
                if store.ready():
                    return True, store.traffic_rebuild_position()
            except (StoreUnavailable, DeadlinePassed):  # gone since ready() answered
                pass
            return False, None

        try:  # a hung store (not a stopped one) would hold the probe for minutes
            ok, rebuild = await asyncio.wait_for(run_in_threadpool(probe),
                                                 store_check_s(settings))
        except TimeoutError:
            ok, rebuild = False, None
        warmed, started = request.app.state.warm_up, request.app.state.store_started_at
        return JSONResponse(
            {"status": "ready" if ok else "unavailable", "store": store.name,
             "warm_up_s": {name: round(s, 3) for name, s in warmed.items()},
             "store_started_at": started.isoformat() if started else None,
             "traffic_rebuild": None if rebuild is None else {"counted_through": rebuild}},
            status_code=200 if ok else 503,
        )

    return app


def _start_of(store: GraphStore) -> datetime | None:
    try:
        return store.started_at()
    except (StoreUnavailable, DeadlinePassed):
        return None  # not known: no check for restarts until the next start-up


def _warm(app: FastAPI, settings: Settings, started: datetime | None) -> None:
    """Warm the app's store up, noting the start (read before) of the store it warmed."""
    app.state.warm_up = warm_up(app.state.store, settings.walk_limits,
                                (settings.production_environments or ["production"])[0])
    app.state.store_started_at = started


async def _warm_after_restarts(app: FastAPI, settings: Settings) -> None:
    """A restarted Neo4j has forgotten its plans, and the first trace after it took ~4 s:
    every ``warm_up_check_s`` the store's start time is read, and a new one warms it up
    again. In the background, with the server still ready: every replica is cold at once
    then, and taking them all out of rotation would be an outage."""
    store: GraphStore = app.state.store
    while True:
        await asyncio.sleep(settings.warm_up_check_s)
        try:
            started = await asyncio.wait_for(run_in_threadpool(store.started_at),
                                             store_check_s(settings))
        except (StoreUnavailable, DeadlinePassed, TimeoutError):
            continue  # down or hung: a later check finds it back
        except Exception:  # noqa: BLE001 - the check must outlive a surprise
            log.warning("checking whether the store restarted failed", exc_info=True)
            continue
        if started is not None and started != app.state.store_started_at:
            log.info("the store started again at %s: warming it up", started.isoformat())
            await run_in_threadpool(_warm, app, settings, started)
