"""Human reports: the promotion report a release engineer reads and the audit evidence pack
for a regulated release, as Markdown or self-contained HTML, with an SVG picture of the
affected subgraph drawn here (no network, no JavaScript)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from lineagegraph.graph.governance import PromotionReport
from lineagegraph.graph.registry import annotations_read
from lineagegraph.graph.walk import Subgraph
from lineagegraph.schema import AuditEntry, Node, StageMove

# Fill colour per kind, so a reader finds models, prompts and data at a glance.
KIND_COLOURS = {
    "DataSource": "#d8ecd3", "DatasetVersion": "#e6f3e1", "Feature": "#f3f0d7",
    "Job": "#ececec", "TrainingRun": "#f0e6d8", "Model": "#dbe4f3", "ModelVersion": "#cddcf5",
    "Prompt": "#efdcf0", "PromptVersion": "#ead0ed", "Toolset": "#f7e3cf",
    "PolicyPack": "#f6d5d5", "Bundle": "#fff2b3", "Evaluation": "#e8e8f8",
    "Approval": "#e2f0ef", "InferenceOutcome": "#f4f4f4",
}
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 230, 34, 70, 16, 20


def subgraph_svg(subgraph: Subgraph, highlight: str | None = None, max_nodes: int = 80) -> str:
    """Columns by degree (hops from the root), boxes coloured by kind, arrows from the
    dependent to what it depends on. Large subgraphs show the nearest ``max_nodes``."""
    ordered = subgraph.ordered()[:max_nodes]
    shown = {node.id for node, _ in ordered}
    edges = sorted({(e.source, e.target) for e in subgraph.edges.values()
                    if e.source in shown and e.target in shown})
    columns: dict[int, list[str]] = {}
    for node, degree in ordered:
        columns.setdefault(degree, []).append(node.id)
    positions = {}
    for column, (_, ids) in enumerate(sorted(columns.items())):
        for row, node_id in enumerate(ids):
            positions[node_id] = (MARGIN + column * (BOX_W + GAP_X),
                                  MARGIN + row * (BOX_H + GAP_Y))
    # The last column keeps room on its right for same-column edges that bow out.
    width = MARGIN * 2 + max(len(columns), 1) * (BOX_W + GAP_X)
    height = MARGIN * 2 + max((len(v) for v in columns.values()), default=1) * (
        BOX_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" '
        'font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#777"/></marker></defs>',
    ]
    for source, target in edges:
        (x1, y1), (x2, y2) = positions[source], positions[target]
        if x1 == x2:
            # Same column: bow out to the right so the line does not cross the boxes between.
            bow = x1 + BOX_W + GAP_X * 0.45
            parts.append(f'<path d="M {x1 + BOX_W} {y1 + BOX_H / 2:.0f} C {bow:.0f} '
                         f'{y1 + BOX_H / 2:.0f}, {bow:.0f} {y2 + BOX_H / 2:.0f}, '
                         f'{x2 + BOX_W} {y2 + BOX_H / 2:.0f}" fill="none" stroke="#999" '
                         'marker-end="url(#arrow)"/>')
            continue
        # Edges point upstream; draw them between the facing sides of the two boxes.
        start = (x1 + (0 if x2 < x1 else BOX_W), y1 + BOX_H / 2)
        end = (x2 + (BOX_W if x2 < x1 else 0), y2 + BOX_H / 2)
        parts.append(f'<line x1="{start[0]:.0f}" y1="{start[1]:.0f}" x2="{end[0]:.0f}" '
                     f'y2="{end[1]:.0f}" stroke="#999" marker-end="url(#arrow)"/>')
    for node, degree in ordered:
        x, y = positions[node.id]
        stroke = "#c0392b" if node.id == highlight else "#555"
        label = node.id if len(node.id) <= 36 else node.id[:35] + "…"
        parts.append(
            f'<g><title>{html.escape(node.id)} ({node.kind}, {degree} hops)</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'fill="{KIND_COLOURS.get(node.kind, "#fff")}" stroke="{stroke}" '
            f'stroke-width="{2 if node.id == highlight else 1}"/>'
            f'<text x="{x + 8}" y="{y + 14}" font-weight="bold">{html.escape(label)}</text>'
            f'<text x="{x + 8}" y="{y + 27}" fill="#555">{node.kind} · {degree} hops</text></g>')
    if len(subgraph.nodes) > len(ordered):
        parts.append(f'<text x="{MARGIN}" y="{height - 4}" fill="#c0392b">'
                     f'{len(subgraph.nodes) - len(ordered)} more nodes not drawn</text>')
    parts.append("</svg>")
    return "\n".join(parts)


@dataclass(slots=True)
class Section:
    title: str
    rows: list[tuple[str, ...]]
    header: tuple[str, ...] = ()
    note: str | None = None


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


# What Markdown would read as markup inside a line of text: emphasis, code, links, HTML,
# entities, strikethrough, and ``|`` (which ends a table cell). A name such as
# ``fraud_model_v2`` or ``<script>`` must show as written; CommonMark lets a backslash
# escape any ASCII punctuation, and a backslash itself first (it would escape the escape).
_MD_MARKUP = re.compile(r"([\\`*_\[\]<>|~&])")


def _md_text(text: str) -> str:
    """Any text (a title, a note, a table cell) as Markdown that renders as that text."""
    return _MD_MARKUP.sub(r"\\\1", text)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def promotion_sections(report: PromotionReport) -> tuple[str, list[Section]]:
    verdict = f"{report.verdict}: {report.candidate.id} → {report.environment}"
    # Why it is blocked, first: a BLOCK may have every gate passed (already live there).
    why = [Section("Why", [(reason,) for reason in report.reasons], ("reason",))
           ] if report.reasons else []
    sections = why + [
        Section("Gates", [("✔" if g.passed else "✘", g.name, g.reason or "")
                          for g in report.gates], ("", "gate", "why")),
        Section("Diff against what is live",
                [(d.field, _cell(d.current), _cell(d.candidate)) for d in report.diff],
                ("field", f"live ({report.current.id if report.current else 'nothing'})",
                 f"candidate ({report.candidate.id})"),
                note=None if report.diff else "no differences"),
    ]
    radius = report.blast_radius
    if radius is not None:
        kinds: dict[str, int] = {}
        for node_id, node in radius.downstream.nodes.items():
            if node_id != radius.root.id:
                kinds[node.kind] = kinds.get(node.kind, 0) + 1
        sections += [
            Section("Blast radius", [(k, str(c)) for k, c in sorted(kinds.items())],
                    ("kind", "nodes downstream"),
                    note=f"root {radius.root.id}; nothing downstream" if not kinds else
                    f"root {radius.root.id}"),
            Section("Affected bundles", [(b.bundle.id, ", ".join(b.environments) or "—")
                                         for b in radius.bundles], ("bundle", "live in")),
            Section("Traffic", [(env, f"{n:,}") for env, n in radius.traffic.items()],
                    ("environment", "requests"),
                    note=f"{_plural(sum(radius.traffic.values()), 'request')} in all"
                    + ("; PARTIAL: a rebuild of the request counts is under way"
                       if radius.traffic_counted_through is not None else "")),
        ]
    return verdict, sections


def evidence_sections(bundle: Node, pins: dict[str, Sequence[Node]], upstream: Subgraph,
                      evaluations: list[Node], approvals: list[Node],
                      moves: list[StageMove], audit: list[AuditEntry],
                      annotations_cut: bool = False, audit_cut: bool = False,
                      moves_cut: bool = False) -> list[Section]:
    """``pins``: what the bundle pins, by what it is (the data it retrieves from may be
    several sources)."""
    cut = f"some are left out: {annotations_read()}" if annotations_cut else None
    return [
        Section("The bundle and what it pins",
                [("bundle", bundle.id), ("params", _cell(bundle.properties.get("params"))),
                 *[(k, ", ".join(n.id for n in v) or "—") for k, v in pins.items()]],
                ("", "")),
        Section("Upstream lineage", [(str(d), n.kind, n.id) for n, d in upstream.ordered()],
                ("hops", "kind", "id"), note="truncated by a cap" if upstream.truncated
                else None),
        Section("Evaluations", [(e.id, _cell(e.properties.get("score")),
                                 _cell(e.properties.get("threshold")), _cell(e.created_at))
                                for e in evaluations], ("evaluation", "score", "threshold",
                                                        "at"), note=cut),
        Section("Approvals", [(a.id, _cell(a.properties.get("approved_by")),
                               _cell(a.properties.get("gate")), _cell(a.created_at))
                              for a in approvals], ("approval", "by", "gate", "at"), note=cut),
        Section("Stage history", [(_cell(m.at), m.environment, _cell(m.from_version),
                                   _cell(m.to_version), m.actor, _cell(m.reason))
                                  for m in moves],
                ("at", "environment", "from", "to", "actor", "reason"),
                note=f"the last {len(moves):,}: earlier moves are left out" if moves_cut
                else None),
        Section("Audit entries", [(_cell(e.at), e.actor, e.action, e.target, _cell(e.after))
                                  for e in audit], ("at", "actor", "action", "target",
                                                    "after"),
                note=f"the first {len(audit):,}: auditLog(target:) pages through the rest"
                if audit_cut else None),
    ]


def markdown(title: str, sections: list[Section], svg_file: str | None = None) -> str:
    lines = [f"# {_md_text(title)}", ""]
    if svg_file:
        # Percent-encoded: a space, parenthesis or ``<`` in the file name would end the link.
        lines += [f"![affected subgraph]({quote(svg_file)})", ""]
    for section in sections:
        lines += [f"## {_md_text(section.title)}", ""]
        if section.note:
            lines += [f"_{_md_text(section.note)}_", ""]
        if section.rows:
            header = section.header or tuple("" for _ in section.rows[0])
            lines.append("| " + " | ".join(_md_text(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_text(c) for c in row) + " |"
                      for row in section.rows]
            lines.append("")
    return "\n".join(lines)


_CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.verdict { display: inline-block; padding: .3em .8em; border-radius: 4px; font-weight: bold; }
.ALLOW { background: #d4efd0; color: #1e6b16; } .BLOCK { background: #f8d3d0; color: #8b1a10; }
table { border-collapse: collapse; margin: .4em 0; } td, th { border: 1px solid #ddd;
padding: .3em .6em; text-align: left; vertical-align: top; font-size: .9em; }
th { background: #f4f4f4; } .note { color: #666; font-style: italic; }
.picture { overflow-x: auto; border: 1px solid #eee; padding: .5em; }
"""


def html_page(title: str, sections: list[Section], svg: str | None = None,
              verdict: str | None = None) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    if verdict:
        body.insert(0, f'<div class="verdict {verdict}">{verdict}</div>')
    for index, section in enumerate(sections):
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.note:
            body.append(f'<p class="note">{html.escape(section.note)}</p>')
        if section.rows:
            body.append("<table>")
            if section.header:
                body.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>"
                                             for h in section.header) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                     for row in section.rows]
            body.append("</table>")
        if svg and index == 1:  # the picture right after gates and diff
            body.append('<h2>Affected subgraph</h2><div class="picture">' + svg + "</div>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
