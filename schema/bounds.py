"""Bounds on what a write may hold, declared once: every ingest path (manifests, outcomes,
OpenLineage, MLflow, the upsert and approve mutations) checks through these, so bad input is
refused naming its field, and both stores take and refuse the same things.

Imports nothing of the project (``kinds``, ``ids`` and ``models`` all use it).
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import AfterValidator

# The longest string Neo4j 5's range indexes take, in UTF-8 bytes (its key limit, 8,167
# bytes, less a header; measured on 5.26). A longer one fails the write ("Property value
# is too large to index", a 500) where the embedded store took it.
NEO4J_INDEX_KEY_BYTES = 8164
# The longest ID, in UTF-8 bytes. Neo4j keeps every node's ID in a range index (its label's
# uniqueness constraint) and its name in another. Half the index's limit leaves room for
# the keys built around an ID (a kept OpenLineage event's is
# ``openlineage.event␟{subject}␟{sha256}``) and is far past any ID a person pastes.
MAX_ID_BYTES = 4096
# The longest text given for one part of an ID (a name, a version, a request or run ID, a
# gate, an approver), and for an indexed property. IDs made of several parts must still
# fit in MAX_ID_BYTES: an approval's holds its bundle's name and version, the approver and
# the gate — 4 × 1,000 bytes and 19 of prefixes and separators.
MAX_ID_PART_BYTES = 1000
# Control characters (C0, DEL, C1) in an ID or a part of one. NUL: SQLite's json_each (the
# embedded store's lookups by ID) ends a string there, so a node was written that no lookup
# by ID found (Neo4j found it). U+001F separates an ID from the rest of the keys built on it
# (a kept event's, a traffic counter's): a run ID holding it would list another run's
# events. A newline or a tab makes an ID that prints as two, or as another. No name a user
# means holds one, and refusing them all is one rule to state.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# The largest properties map of a node, in bytes of canonical JSON (what the stores keep).
# A node is read whole, and a GraphQL operation may ask for it under many aliases: an 8 MB
# node × 50 aliases was a 400 MB answer built in the event loop. Real entries (a prompt's
# template, a tool set's schemas) take kilobytes; a larger document belongs in an artifact
# the node links to (``artifact_uri``).
MAX_PROPERTIES_BYTES = 2**20
# The longest free text given with a change, in UTF-8 bytes: the reason of a stage move (a
# StageMove document's, a promotion override's, a rollback's) and an approval's comment.
# Each is kept in the append-only stage and audit logs, which nothing trims, and comes back
# in every history and audit answer: a 3 MB reason made each of those megabytes. A few
# paragraphs fit; a longer account belongs in a ticket the text links to.
MAX_NOTE_BYTES = 4096
# The most approvals a policy pack may require: past any real sign-off process, and a count
# the approvals gate can meet (10**23 could never be; -3 passed as 0 did).
MAX_REQUIRED_APPROVALS = 100
# How far past now a recorded time may be (clocks differ a little). Later is a time that has
# not come: a node created then is the latest of its kind until then (the eval gate reads
# the latest evaluation), a request logged then counts as traffic of a future day, and a
# stage move dated then would count as live now everywhere it is read.
FUTURE_SKEW = timedelta(minutes=5)


def shown(text: str, limit: int = 60) -> str:
    """``text`` quoted for a message, cut short: an error must not echo 100 KB back."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text):,} characters)"


def id_flaw(text: str, limit: int = MAX_ID_BYTES) -> str | None:
    """Why ``text`` cannot be an ID (``limit`` MAX_ID_PART_BYTES: a part of one), or None.
    Cheap for the short ASCII IDs bulk loads parse (two C calls): encoded only when it may
    be too long, searched only when it holds something unprintable."""
    if text.isascii():
        size = len(text)
        if size <= limit and text.isprintable():  # ASCII printable: no C0 control, no DEL
            return None
    else:  # a character takes at most 4 bytes of UTF-8
        size = len(text.encode("utf-8", "surrogatepass")) if len(text) > limit // 4 else 0
    if size > limit:
        return _too_long(size, limit)
    control = _CONTROL.search(text)
    if control is not None:
        return (f"holds the control character U+{ord(control.group()):04X} (at character "
                f"{control.start()}), which IDs and what they are made of cannot hold")
    return None


def check_id_part(text: str) -> str:
    """``text`` if it may be a part of an ID, else ValueError saying why (pydantic names the
    field)."""
    flaw = id_flaw(text, MAX_ID_PART_BYTES)
    if flaw is not None:
        raise ValueError(flaw)
    return text


def _part_or_none(text: str | None) -> str | None:
    return None if text is None else check_id_part(text)


# The validator of text given for one part of an ID: at most MAX_ID_PART_BYTES, no control
# characters. ``Annotated[str, ID_PART]``, or ``Annotated[str | None, ID_PART]``: the field's
# type stays what the schema docs show.
ID_PART = AfterValidator(_part_or_none)


def _too_long(size: int, limit: int) -> str:
    return f"is {size:,} bytes long in UTF-8; at most {limit:,}"


def note_flaw(text: str) -> str | None:
    """Why ``text`` cannot be a note (a reason, a comment): longer than MAX_NOTE_BYTES. Line
    breaks and tabs are fine: it is prose, never part of an ID."""
    if len(text) <= MAX_NOTE_BYTES // 4:  # a character takes at most 4 bytes of UTF-8
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    return _too_long(size, MAX_NOTE_BYTES) if size > MAX_NOTE_BYTES else None


def _note_or_none(text: str | None) -> str | None:
    flaw = None if text is None else note_flaw(text)
    if flaw is not None:
        raise ValueError(flaw)
    return text


# The validator of free text given with a change (MAX_NOTE_BYTES):
# ``Annotated[str | None, NOTE]``.
NOTE = AfterValidator(_note_or_none)
