"""``lineagegraph demo``: a small realistic example, loaded through the same ingest path as
real data (registry manifests, then inference outcome records), so a newcomer can run the
three questions at once. Re-running it changes nothing.

The story (all in November 2026): fraud-scoring@2 → @3 (model fraud-detector@7 → @8, new
payments data); support-triage@14 in production, @15 (new model snapshot, prompt and
policy) promoted on the 6th, its quality drops, rolled back on the 10th; a new
knowledge-base snapshot lands on the 9th; from the 8th some team calls an unregistered
model directly. About 3,000 requests over the two weeks from the 1st.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any

from lineagegraph.graph.store import GraphStore

from .batch import Batch, IngestError
from .manifest_formats import read_yaml
from .manifests import map_manifests
from .outcomes import OutcomeMapper

START = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 14
SEED = 20261101

# (name, environment) → [(from, version)]: which version served when — the demo's stage
# history, kept here so the generated requests agree with the registry's moves.
SERVING = {
    ("support-triage", "production"): [(START, "14"), (datetime(2026, 11, 6, 9, tzinfo=UTC), "15"),
                                       (datetime(2026, 11, 10, 16, 30, tzinfo=UTC), "14")],
    ("support-triage", "staging"): [(START, "15")],
    ("fraud-scoring", "production"): [(START, "2"), (datetime(2026, 11, 7, tzinfo=UTC), "3")],
}
# requests per day per (name, environment), and the quality each version tends to get
TRAFFIC = {("support-triage", "production"): 120, ("support-triage", "staging"): 15,
           ("fraud-scoring", "production"): 70}
QUALITY = {("support-triage", "14"): 0.91, ("support-triage", "15"): 0.62,
           ("fraud-scoring", "2"): 0.93, ("fraud-scoring", "3"): 0.94}
SHADOW_MODEL = "gpt-4o-mini-unvetted"  # called directly, never registered
SHADOW_FROM = datetime(2026, 11, 8, tzinfo=UTC)


def registry_text() -> str:
    return files("lineagegraph.ingest").joinpath("demo_data/registry.yaml").read_text()


def _serving(name: str, environment: str, at: datetime) -> str:
    version = None
    for since, candidate in SERVING[(name, environment)]:
        if since <= at:
            version = candidate
    assert version is not None
    return version


def outcomes(seed: int = SEED) -> Iterator[dict[str, Any]]:
    """The demo's requests, in time order; same seed, same requests."""
    rng = random.Random(seed)
    records = []
    for (name, environment), per_day in TRAFFIC.items():
        for day in range(DAYS):
            for n in range(per_day):
                at = START + timedelta(days=day, seconds=rng.randrange(86_400))
                version = _serving(name, environment, at)
                quality = min(1.0, max(0.0, rng.gauss(QUALITY[(name, version)], 0.05)))
                records.append({
                    "request_id": f"req-{name[:5]}-{environment[:4]}-{day:02d}{n:03d}",
                    "timestamp": at.isoformat(), "environment": environment,
                    "bundle": f"{name}@{version}",
                    "latency_ms": round(rng.uniform(180, 900) if name == "support-triage"
                                        else rng.uniform(8, 30), 1),
                    "status": "ok", "quality": round(quality, 3),
                })
    for day in range((SHADOW_FROM - START).days, DAYS):
        for n in range(6):
            at = START + timedelta(days=day, seconds=rng.randrange(86_400))
            records.append({"request_id": f"req-shadow-{day:02d}{n:03d}",
                            "timestamp": at.isoformat(), "environment": "production",
                            "model": SHADOW_MODEL, "status": "ok"})
    yield from sorted(records, key=lambda r: (r["timestamp"], r["request_id"]))


def total_records() -> int:
    """Registry documents plus requests: what the demo's progress bar counts to."""
    return len(read_yaml(registry_text())) + sum(1 for _ in outcomes())


def load_demo(store: GraphStore, actor: str = "demo", batch_size: int = 2000) -> Iterator[Batch]:
    """Batches to write, in order: the registry (one transaction), then the requests.
    Each batch is mapped when reached, so the requests see the registry."""
    yield map_manifests(read_yaml(registry_text(), "demo/registry.yaml"), store, actor=actor,
                        source="demo")
    mapper = OutcomeMapper(store, actor)
    chunk: list[tuple[int | str, Any]] = []
    for number, record in enumerate(outcomes(), 1):
        chunk.append((number, record))
        if len(chunk) == batch_size:
            yield _mapped(mapper, chunk)
            chunk = []
    if chunk:
        yield _mapped(mapper, chunk)


def _mapped(mapper: OutcomeMapper, chunk: list[tuple[int | str, Any]]) -> Batch:
    mapped = mapper.map(chunk, "demo")
    if mapped.rejected:  # the demo's own data must be clean
        raise IngestError([p for _, _, problems in mapped.rejected for p in problems])
    return mapped.batch
