"""``lineagegraph demo``: load the README's example into the configured store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from lineagegraph.ingest import demo

from .cli_ingest import load_with_progress
from .settings import Settings

console = Console(stderr=True)


def demo_command(
    db: Annotated[str | None, typer.Option("--db", help="embedded store file")] = None,
    neo4j_uri: Annotated[str | None, typer.Option("--neo4j-uri", help="Neo4j Bolt URI")] = None,
) -> None:
    """Load a small realistic example (two products, stage moves, ~3,000 requests over two
    weeks of November 2026); re-running it changes nothing. Then try the README's queries."""
    settings = Settings.for_cli(db, neo4j_uri)
    store = settings.open_store()
    try:
        load_with_progress(store, demo.load_demo(store), "demo",
                           total=demo.total_records())
    finally:
        store.close()
    console.print(f"demo loaded into {settings.store_label}; try:\n"
                  "  lineagegraph trace req-suppo-prod-07004\n"
                  "  lineagegraph blast-radius model:gpt-5-mini-2026-11\n"
                  "  lineagegraph drift-sources bundle:support-triage@15 "
                  "--onset 2026-11-08T00:00:00Z\n"
                  "  lineagegraph resolve support-triage production --as-of 2026-11-08T00:00:00Z")
