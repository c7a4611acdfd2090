"""``lineagegraph traffic rebuild``: recount the traffic rollup from the stored requests."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from .cli_ingest import DbPath, NeoUri
from .settings import Settings

traffic_app = typer.Typer(help="The request-count rollup behind blastRadius traffic.",
                          no_args_is_help=True)
console = Console()


@traffic_app.command("rebuild")
def rebuild(db: DbPath = None, neo4j_uri: NeoUri = None) -> None:
    """Recount from the requests: for a store written before the rollup existed. Ingestion
    may go on meanwhile; request counts are partial until it finishes (if it stops
    half-way, run it again)."""
    store = Settings.for_cli(db, neo4j_uri).open_store()
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                      console=console) as progress:
            task = progress.add_task("requests counted: 0")
            counted = store.rebuild_traffic(
                progress=lambda n: progress.update(task, description=f"requests counted: {n:,}"))
    finally:
        store.close()
    console.print(f"traffic rollup rebuilt from {counted:,} requests")
