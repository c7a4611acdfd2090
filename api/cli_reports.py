"""``lineagegraph report …``: the promotion report and the audit evidence pack, for
humans, as Markdown (with the picture as a separate SVG file) or self-contained HTML."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from lineagegraph.graph.governance import (
    GovernanceError,
    evidence_pack,
    promotion_report,
    report_picture,
)

from .cli_ingest import DbPath, NeoUri
from .report_render import (
    evidence_sections,
    html_page,
    markdown,
    promotion_sections,
    subgraph_svg,
)
from .settings import Settings

report_app = typer.Typer(help="Reports for humans: promotion impact, audit evidence.",
                         no_args_is_help=True)
console = Console(stderr=True)

Format = Annotated[str, typer.Option("--format", help="md or html")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="file to write")]


# What a default file name keeps of the names in it; the rest becomes "_".
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 120  # well under any file system's 255 bytes, hash and suffix included


def default_path(stem: str, fmt: str) -> Path:
    """A file in the current directory named after ``stem``: anyone with write scope names
    bundles, so a ``/`` or ``..`` in one must not choose where a report lands. A plain name
    is kept as it is; an altered one gets a hash of the original, so two names that differ
    only in what was replaced do not overwrite each other's report."""
    safe = _UNSAFE_IN_NAME.sub("_", stem).lstrip(".")
    if safe != stem or len(safe) > _MAX_STEM:
        safe = f"{safe[:_MAX_STEM]}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}"
    return Path(f"{safe}.{fmt}")


def cannot_write(path: Path, reason: str) -> NoReturn:
    """One line naming the path and why, exit 1: not a traceback."""
    console.print(f"[red]cannot write {escape(str(path))}: {escape(reason)}[/red]",
                  soft_wrap=True)
    raise typer.Exit(1)


def _picture(target: Path) -> Path:
    """The SVG a Markdown report at ``target`` links, beside it."""
    if os.path.isdir(target):  # "-o ." names no file (and with_suffix refuses it)
        cannot_write(target, os.strerror(errno.EISDIR))
    picture = target.with_suffix(".svg")
    if picture == target:
        cannot_write(target, "the Markdown and the SVG it links would be the same file")
    return picture


def _write(files: list[tuple[Path, str]], explicit: bool) -> None:
    """Write every (path, text) or none: a file this call opened is removed again when a
    later write fails, so a failure leaves no report without its picture."""
    opened: list[Path] = []
    path = files[-1][0]
    try:
        # Only a path the user gave may name directories to create (a parent that is a
        # file is left for open to refuse as "Not a directory").
        if explicit and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        for path, text in files:
            with path.open("w", encoding="utf-8") as handle:
                opened.append(path)
                handle.write(text)
    except OSError as error:
        for done in opened:
            with contextlib.suppress(OSError):
                done.unlink()
        cannot_write(path, error.strerror or str(error))
    for path, _ in files:
        console.print(f"wrote {path}")


@report_app.command("promotion")
def promotion(bundle: str, version: str, environment: str, fmt: Format = "html",
              output: Output = None, db: DbPath = None, neo4j_uri: NeoUri = None) -> None:
    """What a release engineer reads before promoting BUNDLE VERSION into ENVIRONMENT."""
    if fmt not in ("md", "html"):
        raise typer.BadParameter("md or html", param_hint="--format")
    settings = Settings.for_cli(db, neo4j_uri)
    store = settings.open_store()
    try:
        report = promotion_report(store, bundle, version, environment, settings.gate_policy,
                                  settings.walk_limits)
        svg = subgraph_svg(report_picture(store, report), highlight=report.candidate.id)
    except GovernanceError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    finally:
        store.close()
    title, sections = promotion_sections(report)
    target = output or default_path(f"promotion-{bundle}-{version}-{environment}", fmt)
    if fmt == "html":
        _write([(target, html_page(title, sections, svg, verdict=report.verdict))],
               explicit=output is not None)
    else:
        picture = _picture(target)
        _write([(picture, svg), (target, markdown(title, sections, svg_file=picture.name))],
               explicit=output is not None)
    console.print(f"verdict: [bold]{report.verdict}[/bold]"
                  + "".join(f"\n  ✘ {reason}" for reason in report.reasons))


@report_app.command("evidence")
def evidence(bundle: str, version: str, fmt: Format = "html", output: Output = None,
             db: DbPath = None, neo4j_uri: NeoUri = None) -> None:
    """The audit evidence pack of BUNDLE VERSION for a regulated release."""
    if fmt not in ("md", "html"):
        raise typer.BadParameter("md or html", param_hint="--format")
    settings = Settings.for_cli(db, neo4j_uri)
    store = settings.open_store()
    try:
        pack = evidence_pack(store, bundle, version, settings.walk_limits)
    except GovernanceError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    finally:
        store.close()
    parts = pack.parts
    pins = {**{what: [node] if node else [] for what, node in (
        ("model version", parts.model), ("prompt version", parts.prompt),
        ("tool set", parts.toolset), ("policy pack", parts.policy))},
        "retrieves from": parts.retrieves_from}
    sections = evidence_sections(pack.bundle, pins, pack.upstream, pack.evaluations,
                                 pack.approvals, pack.stage_moves, pack.audit,
                                 pack.annotations_cut, pack.audit_cut, pack.moves_cut)
    title = f"Evidence pack: {pack.bundle.id}"
    svg = subgraph_svg(pack.upstream, highlight=pack.bundle.id)
    target = output or default_path(f"evidence-{bundle}-{version}", fmt)
    if fmt == "html":
        _write([(target, html_page(title, sections, svg))], explicit=output is not None)
    else:
        picture = _picture(target)
        _write([(picture, svg), (target, markdown(title, sections, svg_file=picture.name))],
               explicit=output is not None)
