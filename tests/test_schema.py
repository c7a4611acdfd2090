"""The vocabulary: IDs, kinds, edges and what is derived from them."""

from __future__ import annotations

import pytest

from lineagegraph.schema import (
    EDGE_KINDS,
    NODE_KINDS,
    NODE_KINDS_BY_LABEL,
    InvalidId,
    Node,
    canonical_id,
    parse_id,
)
from lineagegraph.schema.constraints import constraint_name, uniqueness_constraints
from lineagegraph.schema.kinds import COUNTER_LABEL


@pytest.mark.parametrize(("given", "canonical"), [
    ("model:fraud-detector@7", "model:fraud-detector@7"),
    ("model:fraud-detector@v7", "model:fraud-detector@7"),
    ("prompt:triage-prompt@V9", "prompt:triage-prompt@9"),
    ("dataset:warehouse.payments@2026-11-15", "dataset:warehouse.payments@2026-11-15"),
    ("source:postgres://wh/public.x", "source:postgres://wh/public.x"),
    ("source:postgres://svc@wh:5432/public.x", "source:postgres://svc@wh:5432/public.x"),
    ("dataset:postgres://svc@wh:5432/public.x@v3", "dataset:postgres://svc@wh:5432/public.x@3"),
    ("job:airflow/daily_etl.load", "job:airflow/daily_etl.load"),
    ("eval:triage-eval-v4/2026-06-10", "eval:triage-eval-v4/2026-06-10"),
    ("model:gpt-5-mini-2026-08", "model:gpt-5-mini-2026-08"),
])
def test_ids_parse_to_their_canonical_form(given: str, canonical: str) -> None:
    assert canonical_id(given) == canonical


def test_a_source_id_keeps_colons_slashes_and_at_signs_in_its_name() -> None:
    parsed = parse_id("source:postgres://svc@wh:5432/public.x")
    assert (parsed.prefix, parsed.name, parsed.version) == (
        "source", "postgres://svc@wh:5432/public.x", None)


@pytest.mark.parametrize("bad", ["fraud-detector", "widget:x", "model:", "model:x@", "model:@7"])
def test_malformed_ids_are_rejected_with_the_text(bad: str) -> None:
    with pytest.raises(InvalidId, match="model|widget|fraud"):
        parse_id(bad)


def test_an_id_without_version_names_the_family_unless_told_it_is_a_snapshot() -> None:
    assert Node.from_id("model:fraud-detector").kind == "Model"
    assert Node.from_id("model:fraud-detector@7").kind == "ModelVersion"
    assert Node.from_id("model:gpt-5-mini-2026-08", kind="ModelVersion").kind == "ModelVersion"


def test_declared_properties_are_type_checked_and_extra_ones_kept() -> None:
    n = Node.from_id("outcome:req-1", properties={"environment": "production",
                                                  "latency_ms": "12.5", "region": "eu"})
    assert n.properties == {"environment": "production", "latency_ms": 12.5, "region": "eu"}
    with pytest.raises(ValueError, match="environment"):
        Node.from_id("outcome:req-2", properties={"latency_ms": 3})


def test_a_kind_without_versions_refuses_one() -> None:
    with pytest.raises(ValueError, match="has no versions"):
        Node(kind="DataSource", name="wh.a", version="3")


def test_every_label_has_a_uniqueness_constraint_derived_from_the_declarations() -> None:
    statements = uniqueness_constraints()
    for kind in NODE_KINDS:
        assert any(f"(n:{kind.label}) REQUIRE n.id IS UNIQUE" in s
                   and constraint_name(kind.label) in s for s in statements)
    # Counters are keyed by name: two writers' first MERGE must not create two.
    assert any(f"(n:{COUNTER_LABEL}) REQUIRE n.name IS UNIQUE" in s for s in statements)
    assert all(s.endswith("IS UNIQUE") and "IF NOT EXISTS" in s for s in statements)


def test_every_edge_endpoint_is_a_declared_kind() -> None:
    for edge_kind in EDGE_KINDS:
        assert edge_kind.endpoints
        for source, target in edge_kind.endpoints:
            assert source in NODE_KINDS_BY_LABEL and target in NODE_KINDS_BY_LABEL


def test_only_supersedes_evaluates_and_approves_are_not_lineage() -> None:
    assert {e.type for e in EDGE_KINDS if not e.lineage} == {"SUPERSEDES", "EVALUATES",
                                                             "APPROVES"}
