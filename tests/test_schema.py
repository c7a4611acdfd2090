"""The vocabulary: IDs, kinds, edges and what is derived from them."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from lineagegraph.schema import (
    EDGE_KINDS,
    NODE_KINDS,
    NODE_KINDS_BY_LABEL,
    Edge,
    InvalidId,
    Node,
    canonical_id,
    parse_id,
)
from lineagegraph.schema.constraints import constraint_name, uniqueness_constraints
from lineagegraph.schema.kinds import COUNTER_LABEL
from lineagegraph.schema.models import canonical_json


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


def test_trusted_models_are_what_model_construct_builds() -> None:
    at = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    pairs = [
        (Node.trusted("ModelVersion", "fraud", "3", at, {"registered": False}),
         Node.model_construct(kind="ModelVersion", name="fraud", version="3", created_at=at,
                              properties={"registered": False})),
        (Edge.trusted("outcome:r1", "SERVED_BY", "bundle:triage@2", {}),
         Edge.model_construct(source="outcome:r1", type="SERVED_BY", target="bundle:triage@2",
                              properties={})),
    ]
    for trusted, constructed in pairs:
        assert trusted == constructed
        assert trusted.model_dump() == constructed.model_dump()
        assert trusted.model_fields_set == constructed.model_fields_set
        assert trusted.__pydantic_extra__ == constructed.__pydantic_extra__
        assert trusted.__pydantic_private__ == constructed.__pydantic_private__
        copied = trusted.model_copy(update={"properties": {"a": 1}})
        assert copied.properties == {"a": 1}
        assert trusted.properties == constructed.properties  # the copy changed neither
        # Trusted models of a class share one fields set: a copy's must be its own.
        assert copied.__pydantic_fields_set__ is not trusted.__pydantic_fields_set__
        assert trusted.model_fields_set == constructed.model_fields_set
    node = pairs[0][0]
    assert node.id == "model:fraud@3"
    assert pickle.loads(pickle.dumps(node)) == node
    with pytest.raises(ValidationError):  # frozen, as a validated node
        node.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [1.5, None, True], "é": "naïve ☃"},
    {"nested": {"z": {"y": 1e16, "x": -0.0}, "a": "line\nbreak \"quoted\""}},
    {"at": datetime(2026, 1, 2, tzinfo=UTC), "n": 2**70},
    ["a list", {"k": {}}], "a string", 3, None,
])
def test_canonical_json_is_sorted_compact_ascii_json(value: object) -> None:
    assert canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"),
                                               default=str)


def test_a_stored_node_knows_its_properties_size_and_a_changed_copy_measures_again() -> None:
    text = canonical_json({"b": [1, 2], "a": "é"})
    node = Node.stored("Feature", "f", "1", datetime(2026, 1, 1, tzinfo=UTC), text)
    edge = Edge.stored("feature:f@1", "DERIVED_FROM", "feature:g@1", None)

    assert node == Node.trusted("Feature", "f", "1", node.created_at, json.loads(text))
    assert (node.props_chars, edge.props_chars) == (len(node.props_json), len(edge.props_json))
    grown = node.model_copy(update={"properties": {"a": "x" * 100}, "name": "g"})
    assert (grown.props_chars, grown.id) == (len(grown.props_json), "feature:g@1")
