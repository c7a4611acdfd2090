"""Report files: a bundle's name (anyone with write scope registers one) never chooses where
a report lands, Markdown of an odd name still links its picture and keeps its tables, and a
path the report cannot be written to is one line, with nothing left half-written."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt

from lineagegraph.api.report_render import Section, markdown
from lineagegraph.graph.store import GraphStore

from .ingest_support import cli_args, run_cli
from .story import load_story, story_db
from .test_cli_errors import _one_error

ODD_NAMES = ["team/triage", "../../ESCAPED", "a b|c (x)", "ü-bündle", "dot.name"]
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _register(store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
              names: list[str]) -> list[str]:
    """The story, plus version 1 of a bundle under each of ``names``; the CLI's store options."""
    load_story(store)
    manifest = tmp_path / "odd.yaml"
    manifest.write_text("".join(
        f'---\nname: "{name}"\nversion: 1\nmodel: gpt-5-mini-2026-08\n'
        "prompt_ref: triage-prompt@v9\npolicy_ref: support-safety@v6\n"
        "created_at: 2026-11-19T00:00:00Z\n" for name in names), encoding="utf-8")
    options = cli_args(store, request)
    loaded = run_cli("ingest", "manifests", str(manifest), *options)
    assert loaded.exit_code == 0, loaded.output
    return options


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_dir()}


def test_default_report_names_are_one_safe_file_in_the_working_directory(
        store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    options = _register(store, request, tmp_path, ODD_NAMES)
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = _files(tmp_path)

    for name in ODD_NAMES:
        for fmt in ("md", "html"):
            for command in (["promotion", name, "1", "production"], ["evidence", name, "1"]):
                result = run_cli("report", *command, "--format", fmt, *options)
                assert result.exit_code == 0, result.output
    plain = run_cli("report", "promotion", "support-triage", "15", "production", "--format",
                    "md", *options)
    assert plain.exit_code == 0, plain.output

    created = _files(tmp_path) - before
    assert all(path.parent == work for path in created), sorted(map(str, created))
    assert all(SAFE_FILE_NAME.fullmatch(path.name) for path in created), created
    # md + svg and html, for two commands, per name: none overwrote another's report
    assert len(created) == len(ODD_NAMES) * 2 * 3 + 2
    # a plain name is named as before
    assert {"promotion-support-triage-15-production.md",
            "promotion-support-triage-15-production.svg"} <= {p.name for p in created}


@pytest.mark.parametrize("output", [None, "r (x) <1>.md"])
def test_markdown_of_an_odd_name_links_its_svg_and_keeps_its_table_header(
        store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, output: str | None) -> None:
    options = _register(store, request, tmp_path, ["a b|c (x)"])
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)

    result = run_cli("report", "promotion", "a b|c (x)", "1", "production", "--format", "md",
                     *options, *(["-o", output] if output else []))

    assert result.exit_code == 0, result.output
    written = {p.suffix: p for p in _files(tmp_path) - before}
    page = MarkdownIt("commonmark").enable("table").parse(written[".md"].read_text())
    images = [child for token in page if token.children for child in token.children
              if token.type == "inline" and child.type == "image"]
    assert [unquote(str(image.attrs["src"])) for image in images] == [written[".svg"].name]
    header = [page[i + 1].content for i, token in enumerate(page) if token.type == "th_open"]
    assert ["field", "live (nothing)", "candidate (bundle:a b|c (x)@1)"] in [
        header[i:i + 3] for i in range(len(header))]


@pytest.fixture(name="story_db")
def story_db_fixture(tmp_path: Path) -> str:
    return story_db(tmp_path)


@pytest.mark.parametrize("fmt", ["md", "html"])
@pytest.mark.parametrize("command", [["evidence", "support-triage", "15"],
                                     ["promotion", "support-triage", "15", "production"]])
def test_a_report_to_a_directory_is_one_line_and_writes_nothing(
        story_db: str, tmp_path: Path, command: list[str], fmt: str) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()

    result = run_cli("report", *command, "--db", story_db, "--format", fmt, "-o", str(folder))

    _one_error(result, 1, "cannot write", str(folder), "Is a directory")
    assert list(folder.iterdir()) == [] and not (tmp_path / "reports.svg").exists()


def test_a_report_under_a_file_is_one_line(story_db: str, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a folder")
    output = tmp_path / "plain" / "r.html"

    result = run_cli("report", "evidence", "support-triage", "15", "--db", story_db, "-o",
                     str(output))

    _one_error(result, 1, "cannot write", "r.html", "Not a directory")


def test_markdown_whose_page_cannot_be_written_leaves_no_svg_behind(
        story_db: str, tmp_path: Path) -> None:
    # The SVG's name fits the file system; the Markdown's (longer suffix) does not.
    output = tmp_path / ("r" * 247 + ".markdown")

    result = run_cli("report", "promotion", "support-triage", "15", "production", "--db",
                     story_db, "--format", "md", "-o", str(output))

    _one_error(result, 1, "cannot write", "File name too long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["story.db"]


def test_a_backslash_before_a_pipe_stays_in_its_markdown_cell() -> None:
    page = markdown("t", [Section("s", [("x\\|y", "z")], ("a\\|b", "c"))])

    cells = [token.children[0].content for token in MarkdownIt("commonmark").enable("table")
             .parse(page) if token.type == "inline" and token.children][2:]
    assert cells == ["a\\|b", "c", "x\\|y", "z"]


def test_markdown_shows_names_with_markup_characters_as_written() -> None:
    # `fraud_model_v2`'s underscores, a `*`, a link or HTML in a name rendered as emphasis,
    # links and tags in the title, the section headings, the notes and the cells.
    odd = "a_b_ *c* **d** `e` [f](g) <i>h</i> ~~k~~ &amp; \\ m|n"
    page = markdown(odd, [Section(odd, [(odd, "z")], (odd, "c"), note=odd)])

    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(page)
    shown = html.escape(odd, quote=False)
    assert rendered.count(shown) == 5, rendered  # title, heading, note, header, cell
    for markup in ("<em>", "<strong>", "<code>", "<a ", "<i>", "<s>", "<del>"):
        assert markup not in rendered.replace("<em>" + shown, shown, 1), rendered
