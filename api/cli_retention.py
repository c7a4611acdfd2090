"""``lineagegraph retention plan|apply``: archive bundle versions that never left staging."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lineagegraph.graph import retention

from .cli_ingest import DbPath, NeoUri
from .settings import Settings

retention_app = typer.Typer(help="Archive old versions that never went past staging.",
                            no_args_is_help=True)
console = Console()

OlderThan = Annotated[str, typer.Option("--older-than", help="age: 90d, 12h, 2w or P90D")]


def _candidates(older_than: str, db: str | None,
                neo4j_uri: str | None) -> tuple[list[retention.Candidate], Settings]:
    try:
        age = retention.parse_age(older_than)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--older-than") from None
    settings = Settings.for_cli(db, neo4j_uri)
    store = settings.open_store()
    try:
        return retention.plan(store, age), settings
    finally:
        store.close()


def _show(candidates: list[retention.Candidate], title: str) -> None:
    table = Table(title=title)
    for column in ("version", "created", "was in"):
        table.add_column(column)
    for c in candidates:
        table.add_row(c.node.id, c.node.created_at.strftime("%Y-%m-%d"),
                      ", ".join(c.environments) or "never staged")
    console.print(table)


@retention_app.command("plan")
def plan(older_than: OlderThan = "90d", db: DbPath = None, neo4j_uri: NeoUri = None) -> None:
    """List what `apply` would archive."""
    candidates, _ = _candidates(older_than, db, neo4j_uri)
    _show(candidates, f"{len(candidates)} versions to archive (older than {older_than}, "
                      "never past staging)")


@retention_app.command("apply")
def apply(
    older_than: OlderThan = "90d",
    execute: Annotated[bool, typer.Option("--execute",
                                          help="archive for real (default: dry run)")] = False,
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """Archive the planned versions (a dry run unless --execute), recorded in the audit log."""
    candidates, settings = _candidates(older_than, db, neo4j_uri)
    if not execute:
        _show(candidates, f"dry run: would archive {len(candidates)} versions "
                          "(pass --execute to archive)")
        return
    store = settings.open_store()
    try:
        archived = retention.apply(store, candidates, actor="cli")
    finally:
        store.close()
    console.print(f"archived {archived} versions")
