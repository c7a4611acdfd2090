"""Reports for humans: the HTML parses, the picture names the affected nodes, Markdown links
its SVG, and the evidence pack holds what an auditor asks for."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lineagegraph.api.cli import app
from lineagegraph.api.report_render import html_page, promotion_sections, subgraph_svg
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.governance import approve, evidence_pack, promotion_report, report_picture
from lineagegraph.graph.store import GraphStore

from .story import load_story

runner = CliRunner()


class Structure(HTMLParser):
    """Collects what a reader sees: headings, table cells, and whether tags balance."""

    VOID = {"meta", "br", "img", "hr", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.headings: list[str] = []
        self.cells: list[str] = []
        self._capture: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[type-arg]
        if tag not in self.VOID:
            self.open.append(tag)
        if tag in ("h1", "h2", "td"):
            self._capture = tag

    def handle_startendtag(self, tag: str, attrs: list) -> None:  # type: ignore[type-arg]
        pass  # self-closing SVG elements open nothing

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        self._capture = None

    def handle_data(self, data: str) -> None:
        if self._capture in ("h1", "h2"):
            self.headings.append(data)
        elif self._capture == "td":
            self.cells.append(data)


def parse(page: str) -> Structure:
    structure = Structure()
    structure.feed(page)
    structure.close()
    assert structure.open == [], f"unclosed tags: {structure.open}"
    return structure


def test_promotion_report_html_parses_and_its_svg_names_the_affected_nodes(
    store: GraphStore,
) -> None:
    load_story(store)
    report = promotion_report(store, "support-triage", "15", "production")
    svg = subgraph_svg(report_picture(store, report), highlight=report.candidate.id)
    title, sections = promotion_sections(report)
    page = parse(html_page(title, sections, svg, verdict=report.verdict))

    root = ET.fromstring(svg)  # the SVG is well-formed XML on its own
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert report.blast_radius is not None
    for node_id in [*report.blast_radius.downstream.nodes, "bundle:support-triage@15",
                    "model:gpt-5-mini-2026-11", "prompt:triage-prompt@10"]:
        assert node_id in texts
    assert title == "ALLOW: bundle:support-triage@15 → production"
    assert page.headings[:3] == [title, "Gates", "Diff against what is live"]
    assert "Affected subgraph" in page.headings
    assert "model:gpt-5-mini-2026-08" in page.cells and "model:gpt-5-mini-2026-11" in page.cells


def test_a_blocked_promotion_says_why_first(store: GraphStore) -> None:
    load_story(store)
    # fraud-scoring@2 has no evaluation, no approval and no policy pack.
    report = promotion_report(store, "fraud-scoring", "2", "production")
    title, sections = promotion_sections(report)

    assert title.startswith("BLOCK")
    assert sections[0].title == "Why" and len(sections[0].rows) == 4  # live, and 3 gates
    gates = next(s for s in sections if s.title == "Gates")
    failed = {row[1] for row in gates.rows if row[0] == "✘"}
    assert failed == {"eval", "approvals", "policy_present"}


def test_a_block_with_every_gate_passed_still_says_why(store: GraphStore) -> None:
    load_story(store)
    # 15 is live in staging already: nothing to promote, though every gate passes there.
    report = promotion_report(store, "support-triage", "15", "staging")
    title, sections = promotion_sections(report)

    assert title.startswith("BLOCK")
    gates = next(s for s in sections if s.title == "Gates")
    assert all(row[0] == "✔" for row in gates.rows)
    assert sections[0].title == "Why"
    assert "already live in staging" in sections[0].rows[0][0]


def test_a_report_says_its_traffic_is_partial_while_the_rollup_is_rebuilt(
    store: GraphStore,
) -> None:
    load_story(store)

    def stop(counted: int) -> None:
        raise RuntimeError("interrupted")

    def traffic_note() -> str | None:
        report = promotion_report(store, "support-triage", "15", "production")
        return next(s.note for s in promotion_sections(report)[1] if s.title == "Traffic")

    assert "PARTIAL" not in (traffic_note() or "")
    with pytest.raises(RuntimeError):
        store.rebuild_traffic(page=1, progress=stop)
    assert "PARTIAL" in (traffic_note() or "")


def test_evidence_pack_holds_pins_lineage_evaluations_approvals_moves_and_audit(
    store: GraphStore,
) -> None:
    load_story(store)
    approve(store, "bundle:support-triage@14", "auditor", gate="regulated")

    pack = evidence_pack(store, "support-triage", "14")

    assert pack.parts.model is not None and pack.parts.model.id == "model:gpt-5-mini-2026-08"
    assert "source:kb.articles" in pack.upstream.nodes
    assert [e.id for e in pack.evaluations] == ["eval:triage-eval-v4/r14"]
    # oldest first: the auditor's approval is made now, after the story's T+12d
    assert [a.id for a in pack.approvals] == [
        "approval:a14", "approval:a14-late", "approval:bundle:support-triage@14/auditor/regulated"]
    assert len(pack.stage_moves) == 5
    assert [(e.action, e.actor) for e in pack.audit] == [("approve", "auditor")]


def test_cli_writes_html_and_markdown_with_a_linked_svg(tmp_path: Path) -> None:
    db = tmp_path / "story.db"
    store = EmbeddedStore(db)
    load_story(store)
    store.close()

    html_run = runner.invoke(app, ["report", "promotion", "support-triage", "15",
                                   "production", "--db", str(db), "-o",
                                   str(tmp_path / "r.html")])
    md_run = runner.invoke(app, ["report", "promotion", "support-triage", "15", "production",
                                 "--db", str(db), "--format", "md", "-o",
                                 str(tmp_path / "r.md")])
    evidence_run = runner.invoke(app, ["report", "evidence", "support-triage", "14", "--db",
                                       str(db), "-o", str(tmp_path / "e.html")])

    assert html_run.exit_code == md_run.exit_code == evidence_run.exit_code == 0
    parse((tmp_path / "r.html").read_text())
    parse((tmp_path / "e.html").read_text())
    assert "![affected subgraph](r.svg)" in (tmp_path / "r.md").read_text()
    assert "bundle:support-triage@15" in (tmp_path / "r.svg").read_text()
    assert "verdict: ALLOW" in html_run.output
    pins = parse((tmp_path / "e.html").read_text()).cells
    assert pins[pins.index("retrieves from") + 1] == "source:kb.articles"
