"""Version reads ordered and cut by the store (``GraphStore.read_versions``): the order is
``version_order`` on both stores, and no caller reads a name's versions whole."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from lineagegraph.graph.store import (
    GraphStore,
    VersionFilter,
    version_key,
    version_order,
)
from lineagegraph.schema import Edge, Node

T0 = datetime(2024, 1, 1, tzinfo=UTC)

# (version, created_at): numbers of every size and shape, ties on created_at, times before
# 1970 and a microsecond apart, text that only a code-point order sorts right.
TRICKY = [
    ("2", T0), ("10", T0), ("1.9.0", T0), ("1.10.0", T0), ("007", T0), ("7", T0),
    ("1.2.3.4", T0), ("1.2.3", T0), ("1", T0 + timedelta(microseconds=1)), ("1.0", T0),
    ("0", T0), ("00", T0 - timedelta(days=1)), ("v1", T0 - timedelta(hours=1)),
    ("V2", T0), ("v", T0), ("abc", T0), ("abd", T0), ("1a", T0 - timedelta(days=400)),
    ("99999999999999999999999", T0), ("100000000000000000000000", T0 - timedelta(days=9)),
    ("1.", T0), ("1..2", T0), (".1", T0), ("x\U0001f600", T0), ("x\uffff", T0),
    ("old", datetime(1960, 6, 1, 12, 0, 0, 500, tzinfo=UTC)),
    ("older", datetime(1960, 6, 1, 12, 0, 0, 499, tzinfo=UTC)),
    ("run-b", T0 + timedelta(milliseconds=1)), ("run-a", T0 + timedelta(milliseconds=1)),
]


def _old_order(node: Node) -> tuple[int, tuple[int, ...], float, str]:
    """``version_order`` as it was defined before the stores computed it (tuples)."""
    version = node.version or ""
    dotted = re.fullmatch(r"[vV]?(\d+(?:\.\d+)*)", version)
    if dotted:
        numbers = tuple(int(part) for part in dotted.group(1).split("."))
        return (0, numbers, node.created_at.timestamp(), version)
    return (1, (), node.created_at.timestamp(), version)


def tricky_nodes(kind: str = "Toolset", name: str = "t") -> list[Node]:
    # ``v1`` is made ``1`` (``normalize_version``): the last of an ID is kept, as upsert does.
    nodes = (Node(kind=kind, name=name, version=v, created_at=at) for v, at in TRICKY)
    return list({n.id: n for n in nodes}.values())


def test_version_key_orders_as_the_tuples_it_replaced() -> None:
    nodes = tricky_nodes()
    assert ([n.version for n in sorted(nodes, key=version_order)]
             == [n.version for n in sorted(nodes, key=_old_order)])


def test_version_key_reads_only_ascii_digits_as_numbers() -> None:
    # Java's \d (Neo4j's =~) is ASCII: Python's took Arabic-Indic digits for numbers too.
    assert version_key("\u0663", T0).startswith("1!")
    assert version_key("3", T0).startswith("00001")


def test_store_orders_versions_as_version_order(store: GraphStore) -> None:
    nodes = tricky_nodes()
    store.upsert(nodes)

    read = store.versions("Toolset", "t", last=len(nodes))
    rows = store.version_sizes(VersionFilter(("Toolset",), "t"), len(nodes))

    expected = sorted(nodes, key=version_order)
    assert [n.version for n in read] == [n.version for n in expected]
    assert [row.key for row in rows] == [version_order(n) for n in expected]
    assert [row.chars for row in rows] == [n.props_chars for n in expected]


def test_store_pages_versions_back_from_a_key_with_no_gap_or_overlap(
        store: GraphStore) -> None:
    nodes = tricky_nodes()
    store.upsert(nodes)

    pages: list[list[Node]] = []
    before = None
    while True:
        page = store.versions("Toolset", "t", last=4, before=before)
        pages.insert(0, page)
        if len(page) < 4:
            break
        before = version_order(page[0])

    assert ([n.version for page in pages for n in page]
            == [n.version for n in sorted(nodes, key=version_order)])


def test_store_reads_whole_numbers_and_leaves_excluded_versions_out(
        store: GraphStore) -> None:
    nodes = tricky_nodes()
    store.upsert(nodes)

    whole = store.versions("Toolset", "t", last=100, whole_numbers=True)
    newest = store.versions("Toolset", "t", last=2, exclude={"tools:t@run-b"})

    assert [n.version for n in whole] == [n.version for n in sorted(
        (n for n in nodes if n.version and n.version.isascii() and n.version.isdigit()),
        key=version_order)]
    assert [n.version for n in newest] == ["x\U0001f600", "run-a"]
