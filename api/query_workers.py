"""The threads GraphQL's store work runs on: a number of its own, so what queries hold at
once is bounded by ``LINEAGEGRAPH_QUERY_WORKERS`` times one walk's caps (``max_nodes``,
``max_walk_chars``), not by a thread pool other work shares.

Work beyond that many waits for a thread within its query's time budget, and is dropped
unstarted when the budget runs out first (a mutation that never started writes nothing).
``/metrics`` shows the work running and waiting, so a queue is told from a slow store."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from lineagegraph.graph import deadline

T = TypeVar("T")


class NotStarted(TimeoutError):
    """The query's budget ran out before a thread took its work."""


class QueryWorkers:
    def __init__(self, count: int) -> None:
        self.count = count
        self.running = 0
        self.waiting = 0
        self._counts = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        with self._counts:
            # Made on first use: an app served again after ``close`` (a test client
            # entered twice) gets threads again.
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="query")
            return self._pool

    async def run(self, at: float, work: Callable[[], T]) -> T:
        """``work`` on a query thread with the deadline ``at`` (``time.monotonic()``);
        ``NotStarted`` if no thread took it by then, ``TimeoutError`` if it ran past it."""

        def begin() -> T:
            with self._counts:
                self.waiting -= 1
                self.running += 1
            try:
                return deadline.within(at, work)
            finally:
                with self._counts:
                    self.running -= 1

        with self._counts:
            self.waiting += 1
        # In the caller's context, as asyncio.to_thread runs work: the request ID its log
        # records carry (api/request_ids.py) is there.
        submitted = self._executor().submit(contextvars.copy_context().run, begin)
        try:
            # wait_for cancels the wrapper on timeout, which cancels the work if unstarted.
            return await asyncio.wait_for(asyncio.wrap_future(submitted), at - time.monotonic())
        except BaseException as error:  # a timeout, or the caller gone (cancelled)
            if submitted.cancel():  # never started: it counts as waiting no more
                with self._counts:
                    self.waiting -= 1
                if isinstance(error, TimeoutError):
                    raise NotStarted from None
            raise

    def close(self) -> None:
        with self._counts:
            pool, self._pool = self._pool, None
        if pool is not None:
            # Work a query's budget still allows finishes in its thread (the stores watch
            # the deadline); queued work is dropped.
            pool.shutdown(wait=False, cancel_futures=True)
