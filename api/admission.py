"""Admission to the ingest routes by the bytes of the bodies they hold at once.

A request's body is held, parsed and mapped whole while it is written in one transaction:
an outcomes POST holds ~12 times its body in memory until it commits (README,
settings). The body limit bounds one request, not how many arrive together. So the ingest
routes' writes take turns by body size: those whose bodies fit together in
``LINEAGEGRAPH_INGEST_BUDGET_BYTES`` (default twice the body limit) go at once, the rest
wait in arrival order before their bodies are read (a waiting request holds a connection,
not its body), and one that has waited ``LINEAGEGRAPH_INGEST_WAIT_S`` is answered 503 with
``Retry-After``. A body larger than the budget goes alone. Small OpenLineage events pass
beside a bulk load; two bulk loads take turns (writes of one store largely do anyway)."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request, Response
from starlette.datastructures import Headers

from .content_encoding import InflatingRoute
from .errors import problem_response

BUSY = {"description": "INGEST_BUSY: no turn within LINEAGEGRAPH_INGEST_WAIT_S "
                       "(LINEAGEGRAPH_INGEST_BUDGET_BYTES); nothing written, send it again"}


class IngestBusy(Exception):
    """No turn came within the wait."""


class BodyBudget:
    """Bytes of ingest bodies in flight, handed out first come, first served: a small
    request arriving behind a waiting large one waits too, so a stream of small events
    cannot starve a bulk load."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.used = 0
        self._waiting: deque[int] = deque()  # tickets, in arrival order
        self._tickets = 0
        self._changed: asyncio.Condition | None = None  # made on the serving loop
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn."""
        return len(self._waiting)

    def _condition(self) -> asyncio.Condition:
        # An app served again on another loop (a test client entered twice) starts afresh:
        # a condition is bound to its loop, and what the old loop held went with it.
        loop = asyncio.get_running_loop()
        if self._changed is None or self._loop is not loop:
            self._changed, self._loop = asyncio.Condition(), loop
            self.used = 0
            self._waiting.clear()
        return self._changed

    @asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes (at most the whole budget) for the block; ``IngestBusy``
        after ``wait_s`` without them."""
        size = min(max(size, 0), self.limit)
        changed = self._condition()
        async with changed:
            ticket = self._tickets
            self._tickets += 1
            self._waiting.append(ticket)

            def admitted() -> bool:
                return self._waiting[0] == ticket and self.used + size <= self.limit

            try:
                # wait_for(…, 0) times out before its first look: look here first.
                if not admitted():
                    await asyncio.wait_for(changed.wait_for(admitted), self.wait_s)
            except TimeoutError:
                raise IngestBusy from None
            finally:
                self._waiting.remove(ticket)
                changed.notify_all()  # the next in line may fit now
            self.used += size
        try:
            yield
        finally:
            async with changed:
                self.used -= size
                changed.notify_all()


def reserved_bytes(headers: Headers, limit: int) -> int:
    """What a request's body may take: its Content-Length as sent, or the body limit when
    it is compressed (it inflates up to that) or its length is not declared."""
    declared = headers.get("content-length", "")
    encoding = headers.get("content-encoding", "").strip().lower()
    if declared.isdigit() and encoding in ("", "identity"):
        return min(int(declared), limit)
    return limit


class IngestRoute(InflatingRoute):
    """An ingest route: its writes wait for their turn in the app's ``BodyBudget``
    (``app.state.ingest_budget``) before the body is read, then inflate it
    (``InflatingRoute``) and run."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # In OpenAPI: a 503 may also mean no turn came (a route may say more of its own).
        responses = dict(kwargs.pop("responses", None) or {})
        responses.setdefault(503, BUSY)
        super().__init__(path, endpoint, responses=responses, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def admitted_handler(request: Request) -> Response:
            if request.method in ("GET", "HEAD"):
                return await handler(request)
            budget: BodyBudget = request.app.state.ingest_budget
            size = reserved_bytes(request.headers, request.app.state.settings.max_body_bytes)
            try:
                async with budget.reserve(size):
                    return await handler(request)
            except IngestBusy:
                return problem_response(
                    f"the service is busy with {budget.used:,} bytes of ingest bodies "
                    f"(LINEAGEGRAPH_INGEST_BUDGET_BYTES: {budget.limit:,}) and this request "
                    f"waited {budget.wait_s:g} s (LINEAGEGRAPH_INGEST_WAIT_S); send it again "
                    "shortly", None, 503, code="INGEST_BUSY",
                    headers={"Retry-After": str(max(1, math.ceil(budget.wait_s)))},
                    path=request.url.path)

        return admitted_handler
