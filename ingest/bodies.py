"""Request and file bodies as text and JSON, with problems that say where they break.

``json.loads`` takes more than the graph can keep, so every JSON body is also checked for
what would break later: nesting deeper than the parser's stack (a ``RecursionError``) or
than what pydantic, the encoders and the stores handle (``MAX_DEPTH``); integers longer
than Python reads (``sys.get_int_max_str_digits``, a ``ValueError``); NaN and Infinity,
which JSON has not (the stores wrote them back as invalid JSON or as null); and lone
surrogate escapes (``"\\ud800"``), which have no UTF-8 form (SQLite refused to write them,
and every response that would have shown them failed).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from .batch import IngestError, Problem

# Levels of nesting below a record's top: what pydantic's JSON parser takes (jiter's
# recursion limit), and far below where json.dumps or a store would run out of stack.
MAX_DEPTH = 200
LONE_SURROGATE = "not valid Unicode: a lone surrogate escape"
TOO_DEEP = f"the value is nested too deeply (more than {MAX_DEPTH} levels)"
NOT_FINITE = ("not a finite number: JSON has no NaN or Infinity (nor numbers beyond a "
              "double's range)")
_SHOWN_LEVELS = 12  # of a too-deep value's path
_SURROGATE = re.compile("[\ud800-\udfff]")  # a pair decodes to one character: lone ones
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()

Path = tuple[str | int, ...]


def utf8_flaw(data: bytes, error: UnicodeDecodeError, *, line: int = 1,
              offset: int = 0) -> str:
    """Where ``data`` — a file's text from ``line``, ``offset`` bytes in — stops being
    UTF-8, as ``error`` (decoding ``data``) found."""
    lines = data.count(b"\n", 0, error.start)
    return f"not UTF-8 text: line {line + lines}, byte {offset + error.start}"


def decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IngestError(Problem(f"the body is not UTF-8: {error}")) from None


def parse_json(text: str, first_record: int | None = 1) -> Any:
    """The JSON value of ``text``, or an ``IngestError`` saying where it breaks. Records are
    numbered from ``first_record``: a top-level array's items, else the value itself (None:
    one value, not records)."""
    try:
        return load_json(text, first_record=first_record)
    except json.JSONDecodeError as error:
        raise IngestError(Problem(
            f"malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}")
        ) from None


def load_json(text: str, record: int | str | None = None,
              first_record: int | None = None) -> Any:
    """``parse_json`` for callers with their own wording of malformed JSON: a
    ``json.JSONDecodeError`` is theirs to raise. ``record`` names a value that is one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as error:
        array = text.lstrip(_JSON_SPACE).startswith("[")
        record, path = _located(unreadable_path(text), array, record, first_record)
        raise IngestError(Problem(unreadable(error), record, field_path(path))) from None
    check_json(value, text, record, first_record)
    return value


def unreadable(error: RecursionError | ValueError) -> str:
    """What ``json.loads`` could not read in JSON text that is well formed."""
    if isinstance(error, RecursionError):
        return TOO_DEEP
    return f"a number longer than Python reads ({sys.get_int_max_str_digits()} digits)"


def check_json(value: Any, text: str, record: int | str | None = None,
               first_record: int | None = None) -> None:
    """``IngestError`` naming the first flaw of a parsed value (see the module docstring).
    Strings are searched only when ``text``, the JSON it came from, has a ``\\ud`` escape."""
    found = json_flaw(value, strings=has_surrogate_escape(text))
    if found is None:
        return
    path, message = found
    record, path = _located(path, isinstance(value, list), record, first_record)
    raise IngestError(Problem(message, record, field_path(path)))


def _located(path: Path, array: bool, record: int | str | None,
             first_record: int | None) -> tuple[int | str | None, Path]:
    """A flaw's record and its path within it, records numbered from ``first_record``: a
    top-level ``array``'s items (the path's first part), else the value itself."""
    if first_record is None:
        return record, path
    if not array:
        return first_record, path
    if path:
        return int(path[0]) + first_record, path[1:]
    return record, path


def check_value(value: Any, record: int | str | None = None, strings: bool = True) -> None:
    """``IngestError`` naming the first flaw of a value parsed elsewhere (YAML, a dead
    letter's payload): the checks ``check_json`` makes of JSON text (``strings``: search
    the strings too, unless the text had no ``\\ud`` escape)."""
    found = json_flaw(value, strings)
    if found is not None:
        path, message = found
        raise IngestError(Problem(message, record, field_path(path)))


def has_surrogate_escape(text: str) -> bool:
    """Whether JSON text may hold a lone surrogate: only a ``\\uD800``-``\\uDFFF``
    escape can put one there (decoding UTF-8 refuses them), and most texts have none."""
    return "\\ud" in text or "\\uD" in text


def keepable(value: Any) -> Any:
    """The value, or, if it is not JSON the graph can keep, its JSON text (lone surrogates
    escaped, NaN as written): what a dead letter of a refused value holds."""
    if isinstance(value, str) or json_flaw(value) is None:
        return value
    try:
        return json.dumps(value)
    except RecursionError:
        return "(a value nested too deeply to keep)"


def field_path(path: Path) -> str | None:
    return ".".join(str(part) for part in path) or None


def json_flaw(value: Any, strings: bool = True) -> tuple[Path, str] | None:
    """(path, problem) of the first thing in a parsed JSON value the graph cannot keep, or
    None. Iterative: the value may be nested deeper than Python's stack allows."""
    flaw = _scalar_flaw(value, strings)
    if flaw is not None:
        return (), flaw
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack:
        path, node = stack.pop()
        if type(node) is dict:
            if strings and any(_SURROGATE.search(key) for key in node):
                return path, LONE_SURROGATE  # not the key: the path would carry it too
            items: Any = node.items()
        elif type(node) is list:
            items = enumerate(node)
        else:
            continue
        if len(path) > MAX_DEPTH:
            shown = path[:_SHOWN_LEVELS] + ("…",)
            return shown, TOO_DEEP
        for key, item in items:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append(((*path, key), item))
            elif kind is float or kind is str:
                flaw = _scalar_flaw(item, strings)
                if flaw is not None:
                    return (*path, key), flaw
    return None


def _scalar_flaw(value: Any, strings: bool) -> str | None:
    if type(value) is float and value - value != 0:  # NaN and ±inf: nothing else
        return NOT_FINITE
    if strings and type(value) is str and _SURROGATE.search(value):
        return LONE_SURROGATE
    return None


def unreadable_path(text: str) -> Path:
    """Where in well-formed JSON text ``json.loads`` cannot read (see ``unreadable``): the
    path of members, each parsed alone until one fails, down to the value that does, or
    ``_SHOWN_LEVELS`` levels then "…" (a value nested too deeply). Empty when the top
    value is no object or array, or the text is malformed (the caller's own message)."""
    path: list[str | int] = []
    index = _SPACE.match(text).end()  # type: ignore[union-attr]
    while (found := _unreadable_member(text, index)) is not None:
        if len(path) == _SHOWN_LEVELS:
            path.append("…")
            break
        key, index = found
        path.append(key)
    return tuple(path)


def _unreadable_member(text: str, index: int) -> tuple[str | int, int] | None:
    """(key or position, where its value starts) of the first member of the object or
    array at ``index`` that ``json.loads`` cannot read; None if there is no container
    there or every member reads."""
    opening = text[index:index + 1]
    if opening not in ("[", "{"):
        return None
    closing = "]" if opening == "[" else "}"
    index += 1
    number = 0
    while True:
        index = _SPACE.match(text, index).end()  # type: ignore[union-attr]
        if text.startswith(closing, index):
            return None
        key: str | int = number
        try:
            if opening == "{":
                key, index = _DECODER.raw_decode(text, index)
                index = _SPACE.match(text, index).end()  # type: ignore[union-attr]
                if not text.startswith(":", index):
                    return None
                index = _SPACE.match(text, index + 1).end()  # type: ignore[union-attr]
            start = index
            _, index = _DECODER.raw_decode(text, index)
        except json.JSONDecodeError:
            return None
        except (RecursionError, ValueError):
            return key, start
        index = _SPACE.match(text, index).end()  # type: ignore[union-attr]
        if not text.startswith(",", index):
            return None
        index += 1
        number += 1


def ndjson_lines(text: str | Iterable[str]) -> Iterator[tuple[int, str]]:
    """(number, line) of each non-blank line of NDJSON: a text, or the lines of a text
    stream opened with ``newline="\\n"``. A line ends at "\\n" only ("\\r" before it is JSON
    whitespace): ``str.splitlines`` also ends one at U+2028, U+2029, U+0085, \\x0b, \\x0c
    and \\x1c-\\x1e, which a JSON string may hold raw."""
    for number, line in enumerate(_split(text) if isinstance(text, str) else text, 1):
        if line.strip(_JSON_SPACE):  # a line of other spaces is a record: not JSON
            yield number, line


def _split(text: str) -> Iterator[str]:
    """``text.split("\\n")``, a line at a time: a list of every line is a second copy of a
    body, in as many objects, held while all its records are mapped."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


_JSON_SPACE = " \t\r\n"
