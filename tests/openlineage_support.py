"""Helpers for the OpenLineage tests: the shared real-producer events, event builders, and a
real HTTP server on loopback for the unmodified openlineage-python client."""

from __future__ import annotations

import copy
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)
PRODUCER = "https://example.com/lineagegraph-tests"
RUN_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def shared_openlineage_dir() -> Path:
    """``shared/data/openlineage`` beside the repository (CI clones the repo with ``shared/``
    next to it), or under ``$LINEAGEGRAPH_SHARED_DIR``. Missing data fails, never skips."""
    override = os.environ.get("LINEAGEGRAPH_SHARED_DIR")
    shared = Path(override) if override else Path(__file__).resolve().parents[2] / "shared"
    folder = shared / "data" / "openlineage"
    if not folder.is_dir():
        pytest.fail(f"the shared OpenLineage events are missing: expected {folder} (the "
                    "repository's parent holds shared/, or set LINEAGEGRAPH_SHARED_DIR to the "
                    "shared/ directory)")
    return folder


def shared_events() -> list[tuple[str, dict[str, Any]]]:
    """Every shared event, unchanged, named by file (and index in the Marquez array), in
    the order producers emitted them (file order within a folder is by number)."""
    folder = shared_openlineage_dir()
    found: list[tuple[str, dict[str, Any]]] = []
    for scenario in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(scenario.glob("*.json"), key=lambda p: _number_key(p.stem))
        found += [(f"{scenario.name}/{path.name}", json.loads(path.read_text()))
                  for path in files]
    marquez = folder / "marquez_food_delivery.json"
    found += [(f"{marquez.name}[{i}]", event)
              for i, event in enumerate(json.loads(marquez.read_text()))]
    if not found:
        pytest.fail(f"no OpenLineage events under {folder}")
    return found


def _number_key(stem: str) -> tuple[int, str]:
    digits = "".join(c for c in stem if c.isdigit())
    return (int(digits) if digits else 0, stem)


def dataset(namespace: str, name: str, **facets: Any) -> dict[str, Any]:
    return {"namespace": namespace, "name": name, "facets": facets}


def schema_facet(*columns: str) -> dict[str, Any]:
    return {"_producer": PRODUCER, "fields": [{"name": c, "type": "STRING"} for c in columns]}


def column_lineage(**fields: list[tuple[str, str, str]]) -> dict[str, Any]:
    """``out_field=[(namespace, name, in_field), ...]`` → a columnLineage facet."""
    return {"_producer": PRODUCER, "fields": {
        out: {"inputFields": [
            {"namespace": ns, "name": name, "field": field,
             "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}]}
            for ns, name, field in sources]}
        for out, sources in fields.items()}}


def run_event(
    event_type: str | None = "START",
    *,
    run_id: str = "0192f000-0000-7000-8000-000000000001",
    job: tuple[str, str] = ("airflow", "daily_etl.load"),
    at: datetime = T0,
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    run_facets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventTime": at.isoformat().replace("+00:00", "Z"),
        "producer": PRODUCER,
        "schemaURL": RUN_SCHEMA,
        "run": {"runId": run_id, "facets": run_facets or {}},
        "job": {"namespace": job[0], "name": job[1], "facets": {}},
        # Copies: tests edit events, never the shared datasets they were built from.
        "inputs": copy.deepcopy(inputs or []),
        "outputs": copy.deepcopy(outputs or []),
    }
    if event_type is not None:
        event["eventType"] = event_type
    return event


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-openlineage", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
