"""Warm-up: the dashboards' analyses run once before the service reports itself ready.

A freshly started Neo4j plans each statement the first time it runs it, and a walk's
statement (eight hops unrolled in one query) takes a second or more to plan: on the bench
machine the first trace after a Neo4j restart took 3.1-3.4 s, the next ones ~40 ms. Plans
are cached by statement text, and the text depends on the walk's limits and edge types,
so the warm-up goes through the analyses themselves with the service's limits instead of
keeping a list of statements. It only reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from lineagegraph.schema import bundle_id

from . import registry
from .deadline import DeadlinePassed
from .drift import drift_sources
from .impact import blast_radius
from .store import Direction, GraphStore, StoreUnavailable
from .trace import trace
from .walk import DEFAULT_LIMITS, LINEAGE_DEPTH, WalkLimits, walk

log = logging.getLogger(__name__)

PROBE = "lineagegraph-warm-up"
T = TypeVar("T")


def warm_up(store: GraphStore, limits: WalkLimits = DEFAULT_LIMITS,
            environment: str = "production") -> dict[str, float]:
    """Run each analysis once, and the lineage query; seconds per step.

    driftSources and resolve run on a bundle live in ``environment`` when there is one,
    blastRadius on the model it pins (a release engineer's question, and its walk reaches
    the bundles): a walk that finds nothing stops after its first statement, and the reads
    after the walk (histories, traffic, rollback targets, dataset versions) would stay
    unplanned. The trace runs on a request ID that names nothing (finding a real one
    cheaply is not possible on every store); its first statement is the one every trace
    runs. A failing step is logged and the others still run: the warm-up only saves time
    later.
    """
    spent: dict[str, float] = {}

    def step(name: str, work: Callable[[], T]) -> T | None:
        started = time.perf_counter()
        try:
            return work()
        except (StoreUnavailable, DeadlinePassed) as error:
            # Expected (a Neo4j restarting, or still slow to plan): the cause, in one line.
            log.warning("warm-up: %s failed: %s", name,
                        str(error) or "it ran past its time limit")
            return None
        except Exception:  # noqa: BLE001 - the service still serves; it is just not warm
            log.warning("warm-up: %s failed", name, exc_info=True)  # a bug: where it is
            return None
        finally:
            spent[name] = time.perf_counter() - started

    probe = bundle_id(PROBE, "1")
    live = step("live_bundles", lambda: store.live_bundles(environment)) or []
    target = live[0].id if live else probe
    name = live[0].name if live else PROBE
    parts = step("bundle_parts", lambda: registry.bundle_parts(store, [target])) or {}
    pinned = parts[target].model if target in parts else None
    step("trace", lambda: trace(store, PROBE, limits))
    # A lineage query with the default depth, both ways: what a dashboard opens with. A
    # walk's statement depends on its direction and depth, not on where it starts, and
    # Neo4j runs it before it knows whether the start exists: from an ID that names
    # nothing, each direction costs its planning only, not a walk of a hot bundle's
    # thousands of requests (2 s and ~50 MB of peak memory at large).
    step("lineage", lambda: [walk(store, probe, direction, LINEAGE_DEPTH, limits=limits)
                             for direction in (Direction.UPSTREAM, Direction.DOWNSTREAM)])
    step("blast_radius",
         lambda: blast_radius(store, pinned.id if pinned else target, limits=limits))
    step("drift_sources",
         lambda: drift_sources(store, target, datetime.now(UTC), limits=limits))
    # Now and as of a time: the stage-history read names only the filters it is given.
    step("resolve", lambda: (registry.resolve(store, name, environment),
                             registry.resolve(store, name, environment, datetime.now(UTC))))
    log.info("warm-up took %.1f s on %s%s (%s)", sum(spent.values()), target,
             f" and the model it pins, {pinned.id}," if pinned else "",
             ", ".join(f"{step_name} {seconds:.2f} s" for step_name, seconds in spent.items()))
    return spent
