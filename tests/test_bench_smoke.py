"""CI smoke run of the benchmark: it runs and writes its JSON. No thresholds: the figures
of a shared CI machine mean nothing; bench/README.md holds the measured ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "ingest_outcomes_per_s", "ingest_vs_raw", "ingest_vs_naive", "trace_p50_ms",
    "trace_p99_ms", "trace_vs_raw", "blast_ms", "blast_vs_varlength", "drift_ms",
    "resolve_ms", "service_rss_mb", "embedded_vs_neo4j", "trace_store_vs_raw",
    "trace_graphql_p50_ms", "http_floor_p50_ms",
}


def test_bench_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "small-embedded.json"
    env = {k: v for k, v in os.environ.items() if k != "NEO4J_URI"}
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--scale", "small", "--store",
         "embedded", "--out", str(out), "--reps", "1", "--ingest-reps", "1", "--requests", "10",
         "--warmup", "10"],
        check=True, cwd=tmp_path, env=env, timeout=300,
    )
    result = json.loads(out.read_text())
    assert result.keys() >= KEYS
    assert result["store"] == "embedded" and result["outcomes"] == 10_000
    assert result["info"]["server_warm_up_s"].keys() == {
        "live_bundles", "bundle_parts", "trace", "lineage", "blast_radius", "drift_sources",
        "resolve"}
    # The rollup's traffic agrees with counting the requests one by one.
    assert result["info"]["blast_traffic_matches"] is True
