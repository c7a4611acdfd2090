"""``--help`` reads as the docstrings' paragraphs, rewrapped to the terminal, and names every
option and environment variable whole, at 80 columns (an operator's terminal)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from lineagegraph.api.cli import app
from lineagegraph.api.settings import Settings

WIDTH = 80
LINE = WIDTH - 2  # click's help formatter keeps two columns free


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _help(*path: str) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


def _broken_early(lines: list[str]) -> list[str]:
    """The lines of one wrapped text that end although the next line's first word fits
    after them: a line break kept from the source, not one the width forced."""
    return [line for line, after in zip(lines, lines[1:], strict=False)
            if len(line.rstrip()) + 1 + len(after.split()[0]) <= LINE]


def _lines(output: str) -> list[str]:
    """The output's lines without rich's box edges (the help before this change drew them)."""
    return [line.replace("│", " ").rstrip() for line in output.splitlines()]


def _block_after(lines: list[str], start: int) -> list[str]:
    """The lines after ``lines[start]`` up to the next blank line."""
    block = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        block.append(line)
    return block


@pytest.mark.parametrize(("path", "command"), COMMANDS,
                         ids=[" ".join(path) or "root" for path, _ in COMMANDS])
def test_a_commands_help_is_its_docstring_rewrapped_not_its_line_breaks(
    path: tuple[str, ...], command: Any,
) -> None:
    lines = _lines(_help(*path))

    # the description: the paragraph after the usage line (which may wrap) and a blank line
    usage = next(i for i, line in enumerate(lines) if "Usage:" in line)
    blank = next(i for i in range(usage, len(lines)) if not lines[i].strip())
    described = _block_after(lines, blank)
    paragraph = inspect.cleandoc(command.help or "").split("\n\n")[0]
    # all of it (compared without spaces: a line may end at a hyphen, "dead-|lettered")
    assert "".join("".join(described).split()) == "".join(paragraph.split())
    assert _broken_early(described) == []


@pytest.mark.parametrize("path", [p for p, c in COMMANDS if hasattr(c, "commands")],
                         ids=lambda path: " ".join(path) or "root")
def test_a_groups_list_of_commands_keeps_no_docstring_line_break(path: tuple[str, ...]) -> None:
    lines = _lines(_help(*path))
    listing = _block_after(lines, next(i for i, line in enumerate(lines) if "Commands" in line))
    entries: list[list[str]] = []
    for line in listing:
        if line[:3].strip():  # a command's name starts an entry; its text wraps indented
            entries.append([line])
        else:
            entries[-1].append(line)

    assert entries and all(_broken_early(entry) == [] for entry in entries), listing


def test_serve_help_names_every_setting_and_its_environment_variable_whole() -> None:
    said = " ".join(_help("serve").split())

    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in said
        assert Settings.env_name(name) in said, name  # not cut short with "…"
