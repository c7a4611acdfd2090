"""``lineagegraph ingest …`` and ``lineagegraph deadletter …``: file loads with a progress
bar (records/s) and a closing summary."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest.batch import Batch, LoadSummary, load_batches

from .settings import Settings

ingest_app = typer.Typer(help="Load lineage from files and external systems.",
                         no_args_is_help=True)
deadletter_app = typer.Typer(help="Rejected records: list and replay.", no_args_is_help=True)
console = Console(stderr=True)

DbPath = Annotated[str | None, typer.Option("--db", help="embedded store file (LINEAGEGRAPH_DB)")]
NeoUri = Annotated[str | None, typer.Option("--neo4j-uri", help="Neo4j Bolt URI (NEO4J_URI)")]


def open_store(db: str | None, neo4j_uri: str | None) -> GraphStore:
    overrides = {k: v for k, v in (("db", db), ("neo4j_uri", neo4j_uri)) if v is not None}
    return Settings(**overrides).open_store()


class RecordsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} records/s")


def load_with_progress(store: GraphStore, batches: Iterable[Batch], label: str,
                       total: int | None = None) -> LoadSummary:
    """Write batches with a rich progress bar, then print the summary table."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  RecordsPerSecond(), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        task = progress.add_task(label, total=total)
        summary = load_batches(store, batches,
                               on_progress=lambda n: progress.advance(task, n))
    print_summary(summary)
    return summary


def print_summary(summary: LoadSummary) -> None:
    table = Table(title="ingest summary")
    for column in ("records", "created", "updated", "unchanged", "rejected", "records/s"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{v:,}" for v in (summary.records, summary.created, summary.updated,
                                       summary.unchanged, summary.rejected)),
                  f"{summary.per_second:,.0f}")
    console.print(table)


# --- OpenLineage (ingest/openlineage.py) -------------------------------------------------


# --- registry manifests, inference outcomes, dead letters ---------------------------------


# --- MLflow (ingest/mlflow_import.py) -----------------------------------------------------
