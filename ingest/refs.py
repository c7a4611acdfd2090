"""References as users write them: bare (``triage-prompt@v9``) or as IDs
(``prompt:triage-prompt@9``), read into the canonical ID and the kind they name."""

from __future__ import annotations

from collections.abc import Sequence

from lineagegraph.schema import NODE_KINDS_BY_LABEL, parse_id
from lineagegraph.schema.kinds import known_prefixes


def ref_id(text: str, kinds: Sequence[str], prefix: str | None) -> tuple[str, str]:
    """(canonical ID, kind) of a reference to one of ``kinds``. A bare name gets ``prefix``
    (None: an ID is required, as when the prefix alone cannot say the kind). A model without
    ``@version`` is a provider's pinned snapshot, a ``ModelVersion``; other versioned kinds
    must name a version. ``ValueError`` says what is wrong."""
    text = str(text).strip()
    head = text.split(":", 1)[0]
    if ":" in text and head in known_prefixes():
        parsed = parse_id(text)
    elif prefix is not None:
        parsed = parse_id(f"{prefix}:{text}")
    else:
        wanted = " or ".join(f"{NODE_KINDS_BY_LABEL[k].prefix}:…" for k in kinds)
        raise ValueError(f"{text!r}: write an ID ({wanted})")
    matching = [k for k in kinds if NODE_KINDS_BY_LABEL[k].prefix == parsed.prefix]
    if not matching:
        raise ValueError(f"{text!r} is not an ID of a {' or '.join(kinds)}")
    kind = matching[0]
    if parsed.version is None and NODE_KINDS_BY_LABEL[kind].versioned and kind != "ModelVersion":
        raise ValueError(f"{text!r} names no version (write {parsed.name}@N)")
    return str(parsed), kind
