"""Canonical node IDs: ``kind:name`` or ``kind:name@version``.

Investigators paste these into queries, so parsing is forgiving (``@v7`` is read as ``@7``)
and formatting is canonical. Names may hold colons, slashes and ``@`` (``source:postgres://
u@wh/public.x``): the prefix ends at the first colon, and only prefixes of kinds that carry
versions split a version off at the *last* ``@``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .bounds import MAX_ID_PART_BYTES, id_flaw, shown
from .kinds import VERSIONED_PREFIXES, known_prefixes

_V_NUMBER = re.compile(r"^[vV](\d+)$")
_NOT_VERSIONS = {bool: "true or false (YAML reads an unquoted yes, no, on or off as one: "
                       "quote it)", dict: "a mapping", list: "a list"}


class InvalidId(ValueError):
    """An ID that cannot be parsed; the message names the offending text."""


def escape_at(text: str) -> str:
    """A name or version from another system as an ID part: IDs split the version off at the
    last ``@``, so an ``@`` of its own is written ``%40`` (OpenLineage datasets, MLflow
    models: ``m@1`` would be version 1 of ``m``)."""
    return text.replace("@", "%40")


def normalize_version(version: str | int | float | None) -> str | None:
    """``v7``/``V7``/``7``/7 → ``"7"``; other strings (dates, tags) are kept as written. A
    JSON number is its value (1.10 → ``"1.1"``). Anything else — true, a list, a mapping —
    is ``InvalidId``: its Python spelling (``@True``, ``@{'a': 1}``) was made the version;
    so is a version holding ``@``, which no ID could be parsed back into."""
    if version is None:
        return None
    if type(version) is not str and type(version) is not int and type(version) is not float:
        kind = _NOT_VERSIONS.get(type(version), type(version).__name__)
        raise InvalidId(f"a version is text or a number, not {kind}")
    text = str(version).strip()
    if not text:
        return None
    if "@" in text:  # the ID would split it there: "x@1@2" is version 2 of "x@1"
        raise InvalidId(f"a version cannot hold '@' (an ID splits its version off at the "
                        f"last '@'): {shown(text)}")
    match = _V_NUMBER.match(text)
    return match.group(1) if match else text


@dataclass(frozen=True, slots=True)
class NodeId:
    prefix: str
    name: str
    version: str | None = None

    def __str__(self) -> str:
        return id_text(self.prefix, self.name, self.version)

    def unversioned(self) -> NodeId:
        return NodeId(self.prefix, self.name)


def id_text(prefix: str, name: str, version: str | None) -> str:
    """The ID of parts already canonical (a normalized version or none)."""
    return f"{prefix}:{name}" if version is None else f"{prefix}:{name}@{version}"


def parse_id(text: str, *, versioned_prefixes: frozenset[str] | None = None) -> NodeId:
    """Parse ``kind:name[@version]``.

    ``versioned_prefixes`` says which prefixes may carry a version; by default the ones the
    schema declares (see ``lineagegraph.schema.kinds``). Hot in bulk loads: keep it lean.
    """
    if versioned_prefixes is None:
        versioned_prefixes = VERSIONED_PREFIXES
        prefixes: frozenset[str] | None = known_prefixes()
    else:
        prefixes = None
    if not isinstance(text, str) or ":" not in text:
        raise InvalidId(f"{text!r} is not an ID of the form kind:name[@version]")
    text = text.strip()
    flaw = id_flaw(text)  # too long to index, or a control character
    if flaw is not None:
        raise InvalidId(f"{shown(text)} {flaw}")
    prefix, rest = text.split(":", 1)
    if prefixes is not None and prefix not in prefixes:
        raise InvalidId(f"{text!r}: unknown kind prefix {prefix!r} (known: {sorted(prefixes)})")
    if not rest:
        raise InvalidId(f"{text!r}: empty name")
    version = None
    if prefix in versioned_prefixes and "@" in rest:
        rest, version = rest.rsplit("@", 1)
        version = normalize_version(version)
        if not rest or version is None:
            raise InvalidId(f"{text!r}: empty name or version around '@'")
    return NodeId(prefix, rest, version)


def format_id(prefix: str, name: str, version: str | int | None = None) -> str:
    return id_text(prefix, name, normalize_version(version))


def canonical_id(text: str) -> str:
    """The canonical spelling of an ID given in any accepted form."""
    return str(parse_id(text))


def bundle_id(name: str, version: str) -> str:
    """The ID of version ``version`` of bundle ``name`` (stage moves name bundles by their
    bare name and a version)."""
    return format_id("bundle", name, version)


def approval_name(target: str, approver: str, gate: str | None = None) -> str:
    """The name of ``approver``'s approval of ``target`` (for ``gate``): one per approver,
    target and gate, so approving again is a no-op. The target keeps its kind prefix, so a
    bundle and a model of one name never share approvals. ``approver`` and ``gate`` are
    parts of the ID: ``InvalidId`` naming the one that cannot be."""
    for field, part in (("approver", approver), ("gate", gate or "")):
        flaw = id_flaw(part, MAX_ID_PART_BYTES)
        if flaw is not None:
            raise InvalidId(f"{field}: {shown(part)} {flaw}")
    return f"{target}/{approver}" + (f"/{gate}" if gate else "")
