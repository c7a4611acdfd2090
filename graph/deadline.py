"""A request's time budget, seen by the stores: work past it stops at the store's next
statement (and, on the embedded store, inside a long one) instead of running on in a
thread whose answer nobody waits for any more.

The API sets the deadline around the store work of a query (``within``); stores ask
(``check``, ``passed``) before and during their reads. Work with no deadline set (ingest, the CLI)
is unbounded here and keeps its own limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

_DEADLINE: ContextVar[float | None] = ContextVar("lineagegraph_deadline", default=None)


class DeadlinePassed(Exception):
    """Store work stopped: the query's time budget ran out."""


def within(at: float | None, work: Callable[[], T]) -> T:
    """Run ``work`` with the deadline ``at`` (``time.monotonic()`` seconds)."""
    token = _DEADLINE.set(at)
    try:
        return work()
    finally:
        _DEADLINE.reset(token)


def time_left() -> float | None:
    """Seconds until the deadline (≤ 0 once past it); None without one."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


def passed() -> bool:
    """Whether the deadline has gone by (never, without one)."""
    left = time_left()
    return left is not None and left <= 0


def check() -> float | None:
    """The seconds left (None without a deadline); ``DeadlinePassed`` once it has gone by."""
    left = time_left()
    if left is not None and left <= 0:
        raise DeadlinePassed
    return left
