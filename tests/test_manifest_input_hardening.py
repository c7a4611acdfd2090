"""Registry manifests and governance mutations against input that was accepted or failed as
a 500, on both stores: YAML merge keys that double per level, keys and values JSON has no
form for, versions that are not text or a number, unbounded reasons, actors and comments, an
approvals count the gate cannot use, and versions that link to themselves. Each is refused
naming its document (or argument) and field, quickly, with nothing written."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import create_token
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest.batch import IngestError
from lineagegraph.ingest.manifest_formats import MAX_VALUES, read_yaml
from lineagegraph.schema.bounds import MAX_ID_PART_BYTES, MAX_NOTE_BYTES, MAX_REQUIRED_APPROVALS

from .ingest_support import cli_args, client_for, run_cli
from .story import load_story
from .test_ingest_manifests import load, post_yaml


def _problems(response: Response) -> list[dict[str, Any]]:
    assert response.status_code == 400, response.text
    problems: list[dict[str, Any]] = response.json()["problems"]
    return problems


def _merge_bomb(levels: int) -> str:
    """A DataSource whose mapping ``x{levels}`` merges the one before it twice: PyYAML copies
    2**levels key/value pairs for a dict of four keys."""
    lines = ["x0: &a0 {k0: 1, k1: 2, k2: 3, k3: 4}"]
    lines += [f"x{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, levels + 1)]
    return "\n".join([*lines, "kind: DataSource", "name: merged"]) + "\n"


# -- merge keys ---------------------------------------------------------------------------------


def test_merge_keys_that_double_per_level_are_refused_before_they_expand(
    store: GraphStore,
) -> None:
    text = _merge_bomb(21)
    assert len(text) < 700  # the body size limit cannot help
    with client_for(store) as client:
        started = time.monotonic()
        response = post_yaml(client, text)
        elapsed = time.monotonic() - started

    assert _problems(response) == [{
        "record": 1, "message": f"expands to more than {MAX_VALUES} values (YAML aliases "
                                "count each time they are used)"}]
    assert elapsed < 2  # it took 7 s and 200 MB, then loaded
    assert store.find() == []


def test_merge_keys_count_toward_the_total_of_a_text() -> None:
    # each document alone is under the bound: x12 holds 4 * 2**12 merged pairs, and x0 to
    # x11 as many again: ≈ 65,600 values
    one = _merge_bomb(12)
    assert len(read_yaml(one)) == 1
    with pytest.raises(IngestError) as caught:
        read_yaml(one + "---\n" + one)

    assert [(p.record, p.message.split(" (")[0]) for p in caught.value.problems] == [
        (2, f"with the documents before it, expands to more than {MAX_VALUES} values")]


def test_a_mapping_that_merges_itself_is_refused_not_a_server_error(store: GraphStore) -> None:
    with client_for(store) as client:
        response = post_yaml(client, "x: &a {b: 1, <<: *a}\nkind: DataSource\nname: m\n")

    assert [p["message"] for p in _problems(response)] == [
        "the value is nested too deeply (more than 200 levels)"]
    assert store.find() == []


# -- JSON's types only --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "field", "key", "read_as"), [
    ("kind: DataSource\nname: k\n1: 2\n", "1", "1", "a number"),
    ("kind: DataSource\nname: k\n~: 2\n", "~", "~", "null"),
    ("kind: DataSource\nname: k\non: 2\n", "on", "on", "true or false"),
    ("kind: DataSource\nname: k\nmeta: {1: 2}\n", "meta.1", "1", "a number"),
    ("name: b\nversion: 1\nmodel: gpt-x-2026\nparams: {0.5: 2}\n", "params.0.5", "0.5",
     "a number"),
])
def test_a_yaml_key_that_is_not_text_is_refused_naming_it(
    store: GraphStore, text: str, field: str, key: str, read_as: str,
) -> None:
    with client_for(store) as client:
        response = post_yaml(client, text)

    [problem] = _problems(response)
    assert (problem["record"], problem["field"]) == (1, field)
    assert problem["message"].startswith(
        f"a mapping key must be text: YAML reads {key!r} as {read_as}; quote it")
    assert store.find() == []


@pytest.mark.parametrize(("value", "tag"), [
    ("!!binary /w==", "!!binary"),  # not UTF-8: a 500 when the properties were dumped
    ("!!binary aGVsbG8=", "!!binary"),  # UTF-8: silently kept as the text "hello"
    ("!!timestamp 2026-01-01", "!!timestamp"),
    ("!!set {a, b}", "!!set"),
    ("!!omap [a: 1]", "!!omap"),
])
def test_a_yaml_value_json_has_no_form_for_is_refused_naming_it(
    store: GraphStore, value: str, tag: str,
) -> None:
    with client_for(store) as client:
        response = post_yaml(client, f"- kind: DataSource\n  name: fine\n"
                                     f"- kind: DataSource\n  name: k\n  x: [1, {value}]\n")

    [problem] = _problems(response)
    assert (problem["record"], problem["field"]) == ("1 item 2", "x.1")
    assert problem["message"].startswith(f"a YAML {tag} value, which JSON has no form for")
    assert store.find() == []


def test_the_cli_names_a_key_that_is_not_text_in_one_line(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text("kind: DataSource\nname: k\n1: 2\n")
    (tmp_path / "b.yaml").write_text("kind: DataSource\nname: b\nx: !!binary /w==\n")

    result = run_cli("ingest", "manifests", str(tmp_path), *cli_args(store, request))

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert "record a.yaml#1, field 1: a mapping key must be text" in said
    assert "record b.yaml#1, field x: a YAML !!binary value" in said
    assert store.find() == []


# -- versions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("document", "not_a"), [
    ({"kind": "ModelVersion", "name": "m", "version": {"a": 1}}, "a mapping"),
    ({"kind": "ModelVersion", "name": "m", "version": [1, 2]}, "a list"),
    ({"kind": "ModelVersion", "name": "m", "version": True}, "true or false"),
    ({"kind": "StageMove", "bundle": "b", "version": {"x": 1}, "environment": "staging"},
     "a mapping"),
])
def test_a_json_version_that_is_not_text_or_a_number_is_refused(
    store: GraphStore, document: dict[str, Any], not_a: str,
) -> None:
    with client_for(store) as client:
        response = client.post("/api/v1/manifests", content=json.dumps(document),
                               headers={"content-type": "application/json"})

    [problem] = _problems(response)
    assert problem["field"] == "version"
    assert f"a version is text or a number, not {not_a}" in problem["message"]
    assert store.find() == []


@pytest.mark.parametrize("document", [
    {"name": "support-triage", "version": "15@", "model": "gpt-5-mini-2026-08"},
    {"kind": "ModelVersion", "name": "m", "version": "1@2"},
    {"kind": "StageMove", "bundle": "b", "version": "@3", "environment": "staging"},
])
def test_a_version_holding_an_at_sign_is_refused_naming_the_field(
    store: GraphStore, document: dict[str, Any],
) -> None:
    # An ID splits its version off at the last "@": "15@" made an ID with no version that
    # its own edges refused (a 500), "1@2" version 2 of "m@1".
    with client_for(store) as client:
        response = client.post("/api/v1/manifests", content=json.dumps(document),
                               headers={"content-type": "application/json"})

    [problem] = _problems(response)
    assert (problem["record"], problem["field"]) == (1, "version")
    assert "a version cannot hold '@'" in problem["message"]
    assert store.find() == []


def test_a_yaml_version_read_as_true_is_refused_asking_for_quotes(store: GraphStore) -> None:
    with client_for(store) as client:
        response = post_yaml(client, "kind: ModelVersion\nname: m\nversion: yes\n")

    [problem] = _problems(response)
    assert problem["field"] == "version" and "quote it" in problem["message"]
    assert store.find() == []


# -- reasons, actors, comments ------------------------------------------------------------------


def _stage_move(**fields: str) -> str:
    return "\n".join(["kind: StageMove", "bundle: support-triage", "version: 14",
                      "environment: qa", *(f"{k}: {v}" for k, v in fields.items())]) + "\n"


@pytest.mark.parametrize(("field", "text", "limit"), [
    ("reason", "r" * (MAX_NOTE_BYTES + 1), MAX_NOTE_BYTES),
    ("reason", "é" * (MAX_NOTE_BYTES // 2 + 1), MAX_NOTE_BYTES),  # bytes, not characters
    ("actor", "a" * (MAX_ID_PART_BYTES + 1), MAX_ID_PART_BYTES),
])
def test_a_stage_move_documents_free_text_is_bounded(
    store: GraphStore, field: str, text: str, limit: int,
) -> None:
    load_story(store)
    moves = store.stage_history()
    with client_for(store) as client:
        response = post_yaml(client, _stage_move(**{field: text}))

    [problem] = _problems(response)
    assert problem["field"] == field
    assert f"bytes long in UTF-8; at most {limit:,}" in problem["message"]
    assert store.stage_history() == moves


def test_a_stage_move_reason_at_the_bound_is_recorded(store: GraphStore) -> None:
    load_story(store)
    load(store, _stage_move(reason="r" * MAX_NOTE_BYTES, actor="a" * MAX_ID_PART_BYTES))

    assert store.stage_history()[-1].reason == "r" * MAX_NOTE_BYTES


def test_an_approval_documents_comment_is_bounded(store: GraphStore) -> None:
    load_story(store)
    before = store.find(kinds=["Approval"])
    with client_for(store) as client:
        response = post_yaml(client, "kind: Approval\ntarget: bundle:support-triage@15\n"
                                     f"approved_by: alice\ncomment: {'c' * 5000}\n")

    [problem] = _problems(response)
    assert problem["field"] == "comment" and "at most 4,096" in problem["message"]
    assert store.find(kinds=["Approval"]) == before


@pytest.fixture
def admin(store: GraphStore) -> Iterator[TestClient]:
    load_story(store)
    secret = create_token(store, "release-eng", "admin", actor="test")[1]
    with TestClient(create_app(Settings(neo4j_uri=None), store=store),
                    headers={"Authorization": f"Bearer {secret}"}) as client:
        yield client


@pytest.mark.parametrize(("mutation", "argument"), [
    ('promote(bundle: "fraud-scoring", version: "2", environment: "staging", '
     "overrideReason: $text) { promoted }", "overrideReason"),
    ('rollback(name: "support-triage", environment: "production", reason: $text) '
     "{ warnings }", "reason"),
    ('approve(target: "bundle:support-triage@15", comment: $text) { id }', "comment"),
])
def test_a_mutations_reason_or_comment_is_bounded_naming_the_argument(
    admin: TestClient, store: GraphStore, mutation: str, argument: str,
) -> None:
    moves, audit = store.stage_history(), store.audit_log(limit=10_000)
    approvals = store.find(kinds=["Approval"])
    query = f"mutation ($text: String!) {{ {mutation} }}"
    response = admin.post("/graphql", json={"query": query,
                                            "variables": {"text": "x" * 2_000_000}})

    [error] = response.json()["errors"]
    assert error["message"] == f"{argument}: is 2,000,000 bytes long in UTF-8; at most 4,096"
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert store.stage_history() == moves and store.audit_log(limit=10_000) == audit
    assert store.find(kinds=["Approval"]) == approvals


# -- required approvals -------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "says"), [
    (-3, "greater than or equal to 0"), (10**23, f"less than or equal to "
                                               f"{MAX_REQUIRED_APPROVALS}")])
def test_required_approvals_is_a_count_the_gate_can_meet(
    store: GraphStore, count: int, says: str,
) -> None:
    with client_for(store) as client:
        response = post_yaml(client, "kind: PolicyPack\nname: p\nversion: 1\n"
                                     f"required_approvals: {count}\n")

    [problem] = _problems(response)
    assert problem["field"] == "required_approvals" and says in problem["message"]
    assert store.find() == []


def test_required_approvals_within_the_bound_load(store: GraphStore) -> None:
    load(store, "kind: PolicyPack\nname: p\nversion: 1\nrequired_approvals: 0\n---\n"
                f"kind: PolicyPack\nname: p\nversion: 2\nrequired_approvals: "
                f"{MAX_REQUIRED_APPROVALS}\n")

    assert [n.properties["required_approvals"] for n in sorted(
        store.find(kinds=["PolicyPack"]), key=lambda n: n.id)] == [0, MAX_REQUIRED_APPROVALS]


# -- links to itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "field", "own"), [
    ("kind: ModelVersion\nname: m\nversion: 1\nsupersedes: 1\n", "supersedes", "model:m@1"),
    ("kind: ModelVersion\nname: m\nversion: 1\nsupersedes: v1\n", "supersedes", "model:m@1"),
    ("kind: Toolset\nname: t\nversion: 2\nsupersedes: tools:t@2\n", "supersedes", "tools:t@2"),
    ("kind: ModelVersion\nname: m\nversion: 1\nfine_tuned_from: model:m@v1\n",
     "fine_tuned_from", "model:m@1"),
    ("kind: ModelVersion\nname: m\nversion: 1\nfine_tuned_from: m@1\n", "fine_tuned_from",
     "model:m@1"),
    ("kind: Feature\nname: f\nversion: 3\nderived_from: [source:s, feature:f@3]\n",
     "derived_from.1", "feature:f@3"),
])
def test_a_version_that_links_to_itself_is_refused_naming_the_field(
    store: GraphStore, text: str, field: str, own: str,
) -> None:
    with client_for(store) as client:
        response = post_yaml(client, text)

    assert _problems(response) == [{
        "record": 1, "field": field,
        "message": f"names the document itself, {own}: a version must link to another"}]
    assert store.find() == []


def test_a_version_linking_to_another_of_its_name_still_loads(store: GraphStore) -> None:
    load(store, "kind: ModelVersion\nname: m\nversion: 1\n---\nkind: ModelVersion\nname: m\n"
                "version: 2\nsupersedes: 1\nfine_tuned_from: m@1\n")

    assert {n.id for n in store.find(kinds=["ModelVersion"])} == {"model:m@1", "model:m@2"}
