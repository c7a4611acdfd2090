"""Request and file bodies as text and JSON, with problems that say where they break."""

from __future__ import annotations

import json
from typing import Any

from .batch import IngestError, Problem


def decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IngestError(Problem(f"the body is not UTF-8: {error}")) from None


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise IngestError(Problem(
            f"malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}")
        ) from None
