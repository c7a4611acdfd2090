"""``lineagegraph ingest …`` and ``lineagegraph deadletter …``: file loads with a progress
bar (records/s) and a closing summary."""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated, NoReturn

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

from lineagegraph.graph.store import GraphStore, StoreUnavailable
from lineagegraph.ingest.batch import Batch, LoadInterrupted, LoadSummary, load_batches

from .settings import Settings

ingest_app = typer.Typer(help="Load lineage from files and external systems.",
                         no_args_is_help=True)
deadletter_app = typer.Typer(help="Rejected records: list and replay.", no_args_is_help=True)
console = Console(stderr=True)

DbPath = Annotated[str | None, typer.Option("--db", help="embedded store file (LINEAGEGRAPH_DB)")]
NeoUri = Annotated[str | None, typer.Option("--neo4j-uri", help="Neo4j Bolt URI (NEO4J_URI)")]


def open_store(db: str | None, neo4j_uri: str | None) -> GraphStore:
    return Settings.for_cli(db, neo4j_uri).open_store()


class RecordsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} records/s")


def load_with_progress(store: GraphStore, batches: Iterable[Batch], label: str,
                       total: int | None = None,
                       rejected: Callable[[], int] | None = None,
                       prefetch: bool = False) -> LoadSummary:
    """Write batches with a rich progress bar, then print the summary table. ``rejected``
    is asked once the batches are exhausted: mappers count dead letters as they go."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), RecordsPerSecond(), TimeElapsedColumn(),
                        console=console, transient=False)
    task = progress.add_task(label, total=total)
    try:
        with progress, _stop_on_interrupt() as stop:
            summary = load_batches(store, batches, prefetch=prefetch, stop=stop,
                                   on_progress=lambda n: progress.advance(task, n))
    except LoadInterrupted as interrupted:
        console.print(f"interrupted: {interrupted.summary.records:,} record(s) written (whole "
                      "batches; the batch being written when interrupted was written whole "
                      "or not at all); run the command again to load the rest — re-sending "
                      "changes nothing", soft_wrap=True)
        raise typer.Exit(130) from None
    except StoreUnavailable:  # `main` says why, in one line
        written = int(progress.tasks[0].completed)  # what the bar counted: written batches
        beside = (" (and a batch written beside the failed one may be)"
                  if prefetch and store.parallel_writes > 1 else "")
        console.print(f"the store failed after {written:,} record(s) were written{beside}")
        raise
    if rejected is not None:
        summary.rejected = rejected()
    print_summary(summary)
    return summary


@contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event | None]:
    """An event the first Ctrl-C sets, for the load to stop after the batches being
    written (a KeyboardInterrupt would stop them mid-statement, or mid-read on the
    embedded store, where SQLite turns it into an "interrupted" error); the second raises
    KeyboardInterrupt, abandoning them. None where Ctrl-C is ignored (a background job)
    or this is not the main thread (only it may set a handler)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield None
        return
    stop = threading.Event()

    def interrupted(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, interrupted)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def print_summary(summary: LoadSummary) -> None:
    table = Table(title="ingest summary")
    for column in ("records", "created", "updated", "unchanged", "rejected", "records/s"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{v:,}" for v in (summary.records, summary.created, summary.updated,
                                       summary.unchanged, summary.rejected)),
                  f"{summary.per_second:,.0f}")
    console.print(table)


# --- OpenLineage (ingest/openlineage.py) -------------------------------------------------

@ingest_app.command("openlineage")
def ingest_openlineage(
    files: Annotated[list[str], typer.Argument(
        metavar="FILE...",
        help="files holding one JSON event, a JSON array of events, or NDJSON lines")],
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """Load OpenLineage events, each in its own transaction, in the order of their
    eventTime (file order among equal times). Bad events are dead-lettered (see
    `lineagegraph deadletter`) and counted as rejected; the exit code is 1 when any was."""
    from pathlib import Path

    from rich.markup import escape

    from lineagegraph.ingest import openlineage
    from lineagegraph.ingest.batch import IngestError

    paths = [Path(file) for file in files]
    for path in paths:
        if not path.is_file():
            console.print(f"[red]no such file: {escape(str(path))}[/red]")
            raise typer.Exit(2)
    try:  # every file is read before the store is opened: one unreadable, nothing written
        events = sorted((event for path in paths for event in openlineage.read_events(path)),
                        key=lambda event: openlineage.event_time(event.payload))
    except IngestError as error:  # not UTF-8, not valid gzip
        _refuse("OpenLineage", error)
    rejected: list[openlineage.Failure] = []
    store = open_store(db, neo4j_uri)
    try:
        load_with_progress(store, openlineage.iter_batches(store, events, rejected),
                           "OpenLineage", total=len(events), rejected=lambda: len(rejected))
    finally:
        store.close()
    for failure in rejected:
        console.print(f"[red]rejected[/red] {escape(failure.to_json()['reason'])}")
    if rejected:
        console.print(f"{len(rejected)} of {len(events)} event(s) rejected and dead-lettered: "
                      "`lineagegraph deadletter list`, fix the cause, then `replay`")
        raise typer.Exit(1)


# --- registry manifests, inference outcomes, dead letters ---------------------------------

def _cli_actor() -> str:
    import os

    return os.environ.get("USER") or "cli"


def _must_exist(name: str, file: bool = False) -> None:
    """Exit 2 saying so when there is no such file or directory (or, with ``file``, when
    it is a directory)."""
    import os

    from rich.markup import escape

    if not os.path.exists(name):
        console.print(f"[red]no such file or directory: {escape(name)}[/red]")
        raise typer.Exit(2)
    if file and os.path.isdir(name):
        console.print(f"[red]not a file: {escape(name)} is a directory[/red]")
        raise typer.Exit(2)


def _refuse(what: str, error: Exception) -> NoReturn:
    """Print every problem and exit 1."""
    from rich.markup import escape

    from lineagegraph.ingest.batch import IngestError

    problems = error.problems if isinstance(error, IngestError) else [error]
    if len(problems) == 1:  # one line, as every other CLI error is
        console.print(f"[red]{what} refused, nothing was written:[/red] "
                      f"{escape(str(problems[0]))}", soft_wrap=True)
    else:
        console.print(f"[red]{what} refused, nothing was written:[/red]")
        for problem in problems:
            console.print(f"  {escape(str(problem))}")
    raise typer.Exit(1) from error


@ingest_app.command("manifests")
def ingest_manifests(
    directory: Annotated[str, typer.Argument(
        metavar="DIR", help="registry directory (every *.yaml/*.yml/*.json below it) or one "
        "file")],
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """Load registry manifests (multi-document YAML, or JSON: one document or an array, as
    POST /api/v1/manifests takes them) in one transaction: all of them, or nothing and
    every problem listed by file#document and field."""
    from pathlib import Path

    from rich.markup import escape

    from lineagegraph.ingest.batch import IngestError
    from lineagegraph.ingest.manifest_formats import (
        MANIFEST_SUFFIXES,
        manifest_files,
        read_directory,
    )
    from lineagegraph.ingest.manifests import load_manifests
    from lineagegraph.schema import SchemaError

    _must_exist(directory)
    root = Path(directory)
    if not manifest_files(root):  # a usage error, as a DIR that does not exist is
        *others, last = ("*" + suffix for suffix in MANIFEST_SUFFIXES)
        console.print(f"[red]nothing to load: no {', '.join(others)} or {last} file below "
                      f"{escape(directory)}[/red]", soft_wrap=True)
        raise typer.Exit(2)
    store = open_store(db, neo4j_uri)
    try:
        summary = load_manifests(read_directory(root), store, actor=_cli_actor(),
                                 source=str(root))
        print_summary(summary)
        for warning in summary.warnings:  # asked for, not done: a status the history holds
            console.print(f"[yellow]not applied[/yellow] {escape(str(warning))}")
    except (IngestError, SchemaError) as error:
        _refuse("manifests", error)
    except KeyboardInterrupt:  # one line, as a load's interruption is
        console.print("interrupted: the manifests load in one transaction, so it was "
                      "written whole or not at all; run the command again — re-sending "
                      "changes nothing", soft_wrap=True)
        raise typer.Exit(130) from None
    finally:
        store.close()


@ingest_app.command("outcomes")
def ingest_outcomes(
    file: Annotated[str, typer.Argument(
        metavar="FILE", help="NDJSON or a JSON array, optionally gzipped")],
    batch_size: Annotated[int, typer.Option(min=1, help="records per transaction")] = 5000,
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """Load inference outcome records in batches (one transaction each; on Neo4j
    LINEAGEGRAPH_NEO4J_WRITES_IN_FLIGHT of them at once). A bad record is dead-lettered
    with its reasons and counted as rejected, the rest are written; the exit code is 1
    when any was rejected."""
    from pathlib import Path

    from lineagegraph.ingest.batch import IngestError
    from lineagegraph.ingest.outcomes import DeadLetteringLoad, count_records, read_file
    from lineagegraph.schema import SchemaError

    _must_exist(file, file=True)
    path = Path(file)
    store = open_store(db, neo4j_uri)
    try:
        load = DeadLetteringLoad(store, actor=_cli_actor(), source=str(path), size=batch_size)
        load_with_progress(store, load.batches(read_file(path)), "outcomes",
                           total=count_records(path), rejected=lambda: load.rejected,
                           prefetch=True)
    except IngestError as error:  # a JSON array too large to read whole: nothing written
        _refuse("outcomes", error)
    except SchemaError as error:  # the store refused a whole batch: earlier ones stand
        console.print(f"[red]a batch was refused, nothing of it was written:[/red] {error}; "
                      "earlier batches were, and so may the ones written beside it; "
                      "re-running the file is safe (idempotent)")
        raise typer.Exit(1) from error
    finally:
        store.close()
    if load.rejected:  # exit 1, as the OpenLineage load does
        console.print(f"[yellow]{load.rejected:,} record(s) dead-lettered:[/yellow] "
                      "`lineagegraph deadletter list`, fix the cause, then `replay`")
        raise typer.Exit(1)


@deadletter_app.command("list")
def deadletter_list(
    source: Annotated[str | None, typer.Option(help="only letters of this source")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    after: Annotated[int | None, typer.Option(
        min=0, help="the cursor a previous page printed: list the letters after it")] = None,
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """Rejected records not yet replayed, oldest first: key (a prefix is enough for
    replay), source, reason, when. A page holds at most --limit letters and 8 Mi
    characters of them; it ends with the command for the next one."""
    from rich.markup import escape

    from lineagegraph.ingest.deadletter import describe, pending_page

    store = open_store(db, neo4j_uri)
    try:
        found, cursor = pending_page(store, limit, source, after)
    finally:
        store.close()
    letters = [describe(letter) for letter in found]
    table = Table(title=f"dead letters ({len(letters)})")
    for column in ("key", "source", "reason", "when"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(letter["key"][:12], letter["source"], escape(letter["reason"] or ""),
                      letter["at"][:19])
    Console().print(table)
    if cursor is not None:
        # Every option this page was read with: a next page read from another store (the
        # default file, not --db's) or with another size would not be the next page.
        given = {"--limit": limit, "--source": source, "--db": db, "--neo4j-uri": neo4j_uri}
        command = ["lineagegraph", "deadletter", "list", "--after", str(cursor)] + [
            part for flag, value in given.items() if value is not None
            for part in (flag, str(value))]
        console.print(f"more: {escape(shlex.join(command))}", soft_wrap=True)


@deadletter_app.command("replay")
def deadletter_replay(
    keys: Annotated[list[str] | None, typer.Argument(
        metavar="[KEY]...", help="keys or key prefixes; none: every pending letter")] = None,
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """Map dead letters again and write those that now pass (one transaction each)."""
    from rich.markup import escape

    from lineagegraph.ingest.deadletter import replay

    store = open_store(db, neo4j_uri)
    try:
        result = replay(store, keys or None)
    finally:
        store.close()
    console.print(f"replayed {len(result.replayed)} letter(s)")
    for key, reason in result.still_failing.items():
        console.print(f"[red]still failing[/red] {key[:12]}: {escape(reason)}")
    for key in result.unknown:
        console.print(f"[red]no pending letter with key[/red] {escape(key)}")
    if result.still_failing or result.unknown:
        raise typer.Exit(1)



# --- MLflow (ingest/mlflow_import.py) -----------------------------------------------------

@ingest_app.command("mlflow")
def ingest_mlflow(
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking store or server: sqlite:///path/mlflow.db, http://host:5000")],
    registry_uri: Annotated[str | None, typer.Option(
        "--registry-uri", envvar="MLFLOW_REGISTRY_URI",
        help="model and prompt registry, when not the tracking URI")] = None,
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """Import experiments, runs, datasets, registered models, aliases and prompts from
    MLflow, in one transaction; re-importing the same state changes nothing."""
    from rich.markup import escape

    from lineagegraph.ingest.batch import IngestError
    from lineagegraph.ingest.mlflow_import import read_batch, redact
    from lineagegraph.schema import SchemaError

    store = open_store(db, neo4j_uri)
    try:
        with console.status(f"reading MLflow at {escape(redact(tracking_uri))}"):
            batch, warnings = read_batch(store, tracking_uri, registry_uri, _cli_actor())
        for warning in warnings:
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        load_with_progress(store, [batch], "MLflow", total=batch.size)
        console.print(f"{len(batch.stage_moves)} alias move(s) recorded")
    except (IngestError, SchemaError) as error:
        _refuse("MLflow import", error)
    finally:
        store.close()
