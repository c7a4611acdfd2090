"""Warm-up: the dashboards' analyses run once, against an ID that names nothing, before the
service reports itself ready.

A freshly started Neo4j plans each statement the first time it runs it, and a walk's
statement (eight hops unrolled in one query) takes a second or more to plan: on the bench
machine the first trace after a Neo4j restart took 6.7 s, the next ones ~40 ms. Plans are
cached by statement text, and the text depends on the walk's limits and edge types, so
the warm-up goes through the analyses themselves with the service's limits instead of
keeping a list of statements. It only reads; an ID that happened to exist would merely be
answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from lineagegraph.schema import bundle_id

from . import registry
from .drift import drift_sources
from .impact import blast_radius
from .store import GraphStore
from .trace import trace
from .walk import DEFAULT_LIMITS, WalkLimits

log = logging.getLogger(__name__)

PROBE = "lineagegraph-warm-up"


def warm_up(store: GraphStore, limits: WalkLimits = DEFAULT_LIMITS) -> dict[str, float]:
    """Run trace, blastRadius, driftSources and resolve once each; seconds per analysis.
    A failure is logged and the rest still run: the warm-up only saves time later."""
    probe = bundle_id(PROBE, "1")
    steps: dict[str, Callable[[], object]] = {
        "trace": lambda: trace(store, PROBE, limits),
        "blast_radius": lambda: blast_radius(store, probe, limits=limits),
        "drift_sources": lambda: drift_sources(store, probe, datetime.now(UTC), limits=limits),
        "resolve": lambda: registry.resolve(store, PROBE, "production", None),
    }
    spent: dict[str, float] = {}
    for name, step in steps.items():
        started = time.perf_counter()
        try:
            step()
        except Exception:  # noqa: BLE001 - the service still serves; it is just not warm
            log.warning("warm-up: %s failed", name, exc_info=True)
        spent[name] = time.perf_counter() - started
    log.info("warm-up took %.1f s (%s)", sum(spent.values()),
             ", ".join(f"{name} {seconds:.2f} s" for name, seconds in spent.items()))
    return spent
