"""README's Configuration table against the settings class: every setting listed once,
under its variable and flag, with its default (README is what users set things by)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lineagegraph.api.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
NO_VALUE = {"unset", "none"}


def configuration_rows() -> list[tuple[str, str | None, str]]:
    """(variable, flag or None, default as written) of each setting the table lists. A row
    may name several: `LINEAGEGRAPH_GRAPHQL_MAX_DEPTH` / `_MAX_TOKENS` … with defaults
    `12 / 5000 / …`, and only its first flag (`--neo4j-user` …)."""
    lines = README.read_text().splitlines()
    start = lines.index("| variable | flag | default | meaning |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        variables, flags, defaults = (cell.strip() for cell in line.strip("|").split("|")[:3])
        names = re.findall(r"`([A-Z0-9_]+)`", variables)
        for i, name in enumerate(names[1:], 1):
            if name.startswith("_"):  # a suffix of the first name's stem
                cut = names[0].split("_")[:-(name.count("_"))]
                names[i] = "_".join(cut) + name
        values = defaults.split(" / ") if len(names) > 1 else [defaults]
        given = re.findall(r"`(--[a-z0-9-]+)`", flags)
        assert len(values) == len(names), line
        rows += [(name, given[i] if i < len(given) else None, value)
                 for i, (name, value) in enumerate(zip(names, values, strict=True))]
    return rows


def written_default(text: str) -> Any:
    """A default as the table writes it: `"json"`, a number (with a note after it),
    true/false, unset or none; else the text (a default derived from other settings)."""
    quoted = re.fullmatch(r"`([^`]*)`", text.strip())
    if quoted:
        try:
            return json.loads(quoted.group(1))
        except ValueError:
            return quoted.group(1)
    number = re.match(r"-?\d+(\.\d+)?\b", text)
    if number:
        return float(number.group())
    if text in ("true", "false"):
        return text == "true"
    return None if text in NO_VALUE else text


def test_the_configuration_table_lists_every_setting_with_its_flag_and_default() -> None:
    rows = configuration_rows()
    fields = {Settings.env_name(name): name for name in Settings.model_fields}

    listed = [variable for variable, _, _ in rows]
    assert sorted(listed) == sorted(fields)  # each once: none missing, none stale
    for variable, flag, text in rows:
        field = fields[variable]
        default = Settings.model_fields[field].get_default(call_default_factory=True)
        written = written_default(text)
        if flag is not None:
            assert flag == f"--{field.replace('_', '-')}", variable
        if default is None:  # unset, or derived from others ("twice …"): never a number
            assert written is None or isinstance(written, str), (variable, text)
        elif isinstance(default, bool) or not isinstance(default, int | float):
            assert written == default, (variable, text)
        else:
            assert written == float(default), (variable, text)
