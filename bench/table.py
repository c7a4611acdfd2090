"""Print the markdown table of bench/README.md from the JSON files in bench/results/.

    python bench/table.py [bench/results/small-embedded.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = [
    ("ingest_outcomes_per_s", "{:,.0f}"), ("full_load_outcomes_per_s", "{:,.0f}"),
    ("raw_outcomes_per_s", "{:,.0f}"), ("ingest_vs_raw", "{:.2f}"),
    ("raw_serial_outcomes_per_s", "{:,.0f}"), ("ingest_vs_raw_serial", "{:.2f}"),
    ("raw_beside_builder_outcomes_per_s", "{:,.0f}"),
    ("ingest_vs_raw_beside_builder", "{:.2f}"), ("ingest_vs_naive", "{:.1f}"),
    ("trace_p50_ms", "{:.1f}"), ("trace_p99_ms", "{:.1f}"), ("trace_raw_p50_ms", "{:.1f}"),
    ("trace_vs_raw", "{:.2f}"), ("trace_store_p50_ms", "{:.1f}"),
    ("trace_store_vs_raw", "{:.2f}"), ("trace_graphql_p50_ms", "{:.1f}"),
    ("http_floor_p50_ms", "{:.1f}"), ("blast_ms", "{:.1f}"), ("blast_varlength_ms", "{:.1f}"),
    ("blast_vs_varlength", "{:.2f}"), ("drift_ms", "{:.1f}"), ("resolve_ms", "{:.1f}"),
    ("service_rss_mb", "{:.0f}"), ("embedded_vs_neo4j", "{:.2f}"),
]
ORDER = {"tiny": 0, "small": 1, "medium": 2, "large": 3}


def main() -> None:
    paths = [Path(a) for a in sys.argv[1:]] or sorted(
        (p for p in RESULTS.glob("*.json") if p.stem.count("-") == 1),
        key=lambda p: (ORDER.get(p.stem.split("-")[0], 9), p.stem))
    results = [json.loads(p.read_text()) for p in paths]
    print("| figure | " + " | ".join(f"{r['scale']} / {r['store']}" for r in results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for key, fmt in KEYS:
        cells = []
        for r in results:
            value = r.get(key)
            spread = r.get("spread", {}).get(key)
            text = "–" if value is None else fmt.format(value)
            if spread:
                text += f" ({fmt.format(spread[0])}–{fmt.format(spread[1])})"
            cells.append(text)
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
