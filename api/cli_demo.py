"""``lineagegraph demo``: load the README's example into the configured store."""

from __future__ import annotations

import shlex

from rich.console import Console
from rich.markup import escape

from lineagegraph.ingest import demo

from .cli_ingest import DbPath, NeoUri, load_with_progress
from .settings import Settings

console = Console(stderr=True)

# The README's three questions and `resolve`, as commands to try once the demo is loaded.
TRY = (("trace", "req-suppo-prod-07004"),
       ("blast-radius", "model:gpt-5-mini-2026-11"),
       ("drift-sources", "bundle:support-triage@15", "--onset", "2026-11-08T00:00:00Z"),
       ("resolve", "support-triage", "production", "--as-of", "2026-11-08T00:00:00Z"))


def demo_command(db: DbPath = None, neo4j_uri: NeoUri = None) -> None:
    """Load a small realistic example (two products, stage moves, ~2,900 requests over two
    weeks of November 2026); re-running it changes nothing. Then try the README's queries."""
    settings = Settings.for_cli(db, neo4j_uri)
    store = settings.open_store()
    try:
        load_with_progress(store, demo.load_demo(store), "demo",
                           total=demo.total_records())
    finally:
        store.close()
    # The store flags given travel with each command: without them it would read another
    # store (./lineagegraph.db, or NEO4J_URI's).
    given = [part for flag, value in (("--db", db), ("--neo4j-uri", neo4j_uri))
             if value is not None for part in (flag, value)]
    console.print(f"demo loaded into {escape(settings.store_label)}; try:")
    for command in TRY:
        console.print(f"  {escape(shlex.join(['lineagegraph', *command, *given]))}",
                      soft_wrap=True)
