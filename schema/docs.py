"""The schema reference (``schema/SCHEMA.md``), generated from the declarations in
``kinds.py`` so it can never disagree with them."""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from .kinds import EDGE_KINDS, NODE_KINDS, Properties


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:  # its values, as the field takes them
        return "/".join(str(value) for value in get_args(annotation))
    # Optional fields are the ones not in bold: drop "| None" (a "|" would break the table).
    text = getattr(annotation, "__name__", None) or str(annotation)
    return (text.replace("typing.", "").replace("datetime.datetime", "datetime")
            .replace(" | None", ""))


def _fields(props: type[Properties]) -> list[tuple[str, str, bool]]:
    return [(name, _type_name(field.annotation), field.is_required())
            for name, field in props.model_fields.items()]


def schema_markdown() -> str:
    lines = [
        "# Graph schema",
        "",
        "Generated from `schema/kinds.py` by `lineagegraph export-schema`; a test fails when "
        "it is stale. Every node also has `id`, `kind`, `name`, `version` and `created_at`; "
        "fields beyond those listed are kept in `properties`.",
        "",
        "## Node kinds",
        "",
        "| kind | ID | versioned | meaning | properties (required in bold) | indexed |",
        "|---|---|---|---|---|---|",
    ]
    for kind in NODE_KINDS:
        example = f"`{kind.prefix}:name@version`" if kind.versioned else f"`{kind.prefix}:name`"
        props = ", ".join(f"**{n}**: {t}" if required else f"{n}: {t}"
                          for n, t, required in _fields(kind.props)) or "—"
        lines.append(f"| {kind.label} | {example} | {'yes' if kind.versioned else 'no'} | "
                     f"{kind.description} | {props} | {', '.join(kind.indexed) or '—'} |")
    lines += ["", "## Edge kinds", "",
              "Edges point from the dependent to what it depends on. Walks follow lineage "
              "edges only.", "",
              "| edge | from → to | lineage | meaning |", "|---|---|---|---|"]
    for edge in EDGE_KINDS:
        ends = "; ".join(f"{s} → {t}" for s, t in sorted(edge.endpoints))
        lines.append(f"| `{edge.type}` | {ends} | {'yes' if edge.lineage else 'no'} | "
                     f"{edge.description} |")
    return "\n".join(lines) + "\n"
