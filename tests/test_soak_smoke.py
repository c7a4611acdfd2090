"""Smoke run of the soak benchmark (bench/soak.py): a few seconds on the embedded store,
and its JSON has what the README's Soak section reads. No thresholds: figures only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_KEYS = {"t_s", "rss_mb", "threads", "fds", "sockets", "metrics_series", "log_kb",
               "log_errors", "db_mb", "wal_mb", "ingest_bytes_in_flight", "query_running",
               "ops"}


def test_soak_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "soak-embedded.json"
    env = {k: v for k, v in os.environ.items() if k != "NEO4J_URI"}
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--store", "embedded",
         "--minutes", "0.1", "--interval", "2", "--clients", "2", "--out", str(out)],
        check=True, cwd=tmp_path, env=env, timeout=120, capture_output=True,
    )
    result = json.loads(out.read_text())
    assert result.keys() >= {"store", "requests", "by_status", "unexpected",
                             "growth_per_hour", "samples", "server_log_tail"}
    assert result["store"] == "embedded" and result["auth"] == "tokens"
    assert result["requests"] > 0 and result["samples"]
    assert result["samples"][0].keys() >= SAMPLE_KEYS
    assert result["growth_per_hour"]["rss_mb"].keys() == {"first", "last", "per_hour"}
    # Nothing the service should not answer: no 5xx, no unexpected answer.
    assert not [s for s in result["by_status"] if s.startswith("5")], result["by_status"]
    assert result["unexpected"] == {}, result["unexpected"]
