"""``lineagegraph report …``: the promotion report and the audit evidence pack, for
humans, as Markdown (with the picture as a separate SVG file) or self-contained HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lineagegraph.graph.governance import (
    GovernanceError,
    evidence_pack,
    promotion_report,
    report_picture,
)

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

DbPath = Annotated[str | None, typer.Option("--db", help="embedded store file (LINEAGEGRAPH_DB)")]
NeoUri = Annotated[str | None, typer.Option("--neo4j-uri", help="Neo4j Bolt URI (NEO4J_URI)")]
Format = Annotated[str, typer.Option("--format", help="md or html")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="file to write")]


def _write(output: Path, text: str) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    console.print(f"wrote {output}")


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
    target = output or Path(f"promotion-{bundle}-{version}-{environment}.{fmt}")
    if fmt == "html":
        _write(target, html_page(title, sections, svg, verdict=report.verdict))
    else:
        picture = target.with_suffix(".svg")
        _write(picture, svg)
        _write(target, markdown(title, sections, svg_file=picture.name))
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
                                 pack.approvals, pack.stage_moves, pack.audit)
    title = f"Evidence pack: {pack.bundle.id}"
    svg = subgraph_svg(pack.upstream, highlight=pack.bundle.id)
    target = output or Path(f"evidence-{bundle}-{version}.{fmt}")
    if fmt == "html":
        _write(target, html_page(title, sections, svg))
    else:
        picture = target.with_suffix(".svg")
        _write(picture, svg)
        _write(target, markdown(title, sections, svg_file=picture.name))
