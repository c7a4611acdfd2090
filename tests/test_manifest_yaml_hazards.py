"""Registry manifests against YAML's hazards and the bundle entry's annotations, on both
stores: alias bombs, versions YAML reads as numbers, deep nesting, document numbers as the
user counts them, empty names — each a 400 naming the document (and field), nothing written —
and re-sent bundles that leave their Evaluation and Approval nodes and the audit log alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from httpx import Response

from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest.batch import IngestError
from lineagegraph.ingest.bodies import MAX_DEPTH
from lineagegraph.ingest.manifest_formats import MAX_VALUES, read_json, read_yaml

from .ingest_support import cli_args, client_for, edges_of, run_cli, snapshot
from .test_ingest_manifests import PARTS, SEED_BUNDLE, load, post_yaml

TOO_DEEP = f"the value is nested too deeply (more than {MAX_DEPTH} levels)"


def _laughs(levels: int) -> str:
    """A DataSource whose property ``lol`` expands to 9**levels strings through aliases."""
    lines = ["kind: DataSource", "name: lol", "lol:", '  l1: &l1 ["lol","lol","lol","lol",'
             '"lol","lol","lol","lol","lol"]']
    for level in range(2, levels + 1):
        lines.append(f"  l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _problems(response: Response) -> list[dict[str, Any]]:
    assert response.status_code == 400, response.text
    problems: list[dict[str, Any]] = response.json()["problems"]
    return problems


# -- alias expansion ----------------------------------------------------------------------------


def test_an_alias_bomb_is_refused_naming_its_document(store: GraphStore) -> None:
    text = "kind: DataSource\nname: fine\n---\n" + _laughs(7)
    assert len(text) < 700  # tiny: the body size limit cannot help
    with client_for(store) as client:
        response = post_yaml(client, text)

    assert _problems(response) == [{
        "record": 2, "message": f"expands to more than {MAX_VALUES} values (YAML aliases "
                                "count each time they are used)"}]
    assert store.find() == []


def test_documents_that_each_stay_under_the_bound_cannot_add_up_past_it() -> None:
    one = _laughs(5)  # 9**5 + 9**4 + ... ≈ 66,000 values: under the bound alone
    with pytest.raises(IngestError) as caught:
        read_yaml(one + "---\n" + one.replace("name: lol", "name: lol2"))

    assert [(p.record, p.message.split(" (")[0]) for p in caught.value.problems] == [
        (2, f"with the documents before it, expands to more than {MAX_VALUES} values")]
    assert len(read_yaml(one)) == 1


def test_a_self_referencing_alias_is_refused_not_a_server_error(store: GraphStore) -> None:
    with client_for(store) as client:
        response = post_yaml(client, "kind: DataSource\nname: cycle\nx: &a [*a]\n")

    assert _problems(response) == [{"record": 1, "message": TOO_DEEP}]
    assert store.find() == []


def test_ordinary_anchors_and_merge_keys_still_load(store: GraphStore) -> None:
    load(store, """\
defaults: &lookup { name: lookup_order, scope: read, timeout_s: 5 }
kind: Toolset
name: support-tools
version: 1
tools:
  - *lookup
  - { <<: *lookup, name: lookup_invoice }
""")

    tools = store.get(["tools:support-tools@1"])["tools:support-tools@1"].properties["tools"]
    assert tools == [{"name": "lookup_order", "scope": "read", "timeout_s": 5},
                     {"name": "lookup_invoice", "scope": "read", "timeout_s": 5}]


# -- versions keep their text -------------------------------------------------------------------


def test_unquoted_versions_keep_the_text_yaml_would_read_as_a_number(store: GraphStore) -> None:
    load(store, "".join(f"---\nkind: Toolset\nname: t\nversion: {v}\nsupersedes: false\n"
                        for v in ("1.10", "1.1", "010", "0x1A", "1_000", "7", "v8")))

    assert sorted(n.id for n in store.find(kinds=["Toolset"])) == [
        "tools:t@010", "tools:t@0x1A", "tools:t@1.1", "tools:t@1.10", "tools:t@1_000",
        "tools:t@7", "tools:t@8"]


def test_versions_keep_their_text_in_merge_keys_and_list_documents(store: GraphStore) -> None:
    load(store, """\
- kind: Toolset
  name: listed
  version: 2.10
---
base: &base { kind: Toolset, name: merged, version: 3.10 }
<<: *base
""")

    assert set(store.get(["tools:listed@2.10", "tools:merged@3.10"])) == {
        "tools:listed@2.10", "tools:merged@3.10"}


def test_supersedes_stage_moves_and_eval_runs_keep_their_version_text(
    store: GraphStore,
) -> None:
    load(store, """\
kind: PolicyPack
name: p
version: 1.10
---
kind: PolicyPack
name: p
version: 1.20
supersedes: 1.10
---
name: b
version: 2.10
model: gpt-x-2026
eval: { suite: s, run: 3.10 }
---
kind: Evaluation
suite: s
run: 4.10
target: bundle:b@2.10
---
kind: StageMove
bundle: b
version: 2.10
environment: production
""")

    assert edges_of(store, "policy:p@1.20") == {("SUPERSEDES", "policy:p@1.10")}
    assert set(store.get(["eval:s/3.10", "eval:s/4.10"])) == {"eval:s/3.10", "eval:s/4.10"}
    assert store.stage_at("b", "production") == "2.10"


def test_an_anchored_number_keeps_its_text_only_where_it_is_a_version(
    store: GraphStore,
) -> None:
    load(store, "kind: Toolset\nname: t\nrelease: &r 1.10\nversion: *r\n")

    node = store.get(["tools:t@1.10"])["tools:t@1.10"]
    assert node.properties["release"] == 1.1  # not a version: YAML's number, as before


def test_json_versions_are_json_values_a_number_is_its_value(store: GraphStore) -> None:
    # JSON has no text beside the value: 1.10 is the number 1.1, so a client that means
    # "1.10" sends a string. Integers and strings are versions as written.
    with client_for(store) as client:
        response = client.post("/api/v1/manifests", json=[
            {"kind": "Toolset", "name": "j", "version": 7},
            {"kind": "Toolset", "name": "j", "version": 1.10, "supersedes": False},
            {"kind": "Toolset", "name": "j", "version": "1.10", "supersedes": False}])

    assert response.status_code == 200, response.text
    assert sorted(n.id for n in store.find(kinds=["Toolset"])) == [
        "tools:j@1.1", "tools:j@1.10", "tools:j@7"]


# -- deep nesting -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH, 300, 3000])
def test_deep_yaml_nesting_is_refused_naming_its_document(store: GraphStore, depth: int) -> None:
    text = "kind: DataSource\nname: ok\n---\nkind: DataSource\nname: deep\nx: " + (
        "[" * depth + "]" * depth + "\n")
    with client_for(store) as client:
        response = post_yaml(client, text)

    assert _problems(response) == [{"record": 2, "message": TOO_DEEP}]
    assert store.find() == []


@pytest.mark.parametrize("depth", [300, 100_000])
def test_deep_json_nesting_is_refused(store: GraphStore, depth: int) -> None:
    body = '{"kind": "DataSource", "name": "deep", "x": ' + "[" * depth + "]" * depth + "}"
    with client_for(store) as client:
        response = client.post("/api/v1/manifests", content=body,
                               headers={"content-type": "application/json"})

    assert [p["message"] for p in _problems(response)] == [TOO_DEEP]
    assert store.find() == []


def test_nesting_up_to_the_bound_loads(store: GraphStore) -> None:
    depth = MAX_DEPTH - 1  # the document is the first level
    load(store, "kind: DataSource\nname: nested\nx: " + "[" * depth + "]" * depth + "\n")

    assert "x" in store.get(["source:nested"])["source:nested"].properties


def test_an_integer_too_long_for_python_is_refused_not_a_server_error(
    store: GraphStore,
) -> None:
    digits = "1" * 5000
    with client_for(store) as client:
        as_yaml = post_yaml(client, f"kind: DataSource\nname: big\nx: {digits}\n")
        as_json = client.post("/api/v1/manifests", content=f'{{"x": {digits}}}',
                              headers={"content-type": "application/json"})

    assert [p.get("record") for p in _problems(as_yaml)] == [1]
    assert len(_problems(as_json)) == 1
    assert store.find() == []


# -- document numbers ---------------------------------------------------------------------------

COUNTED = """\
kind: DataSource
name: one
---
---
- kind: DataSource
  name: three-a
- kind: Gadget
---
kind: Gadget
"""


def test_records_are_document_positions_counting_empty_and_list_documents(
    store: GraphStore,
) -> None:
    with client_for(store) as client:
        response = post_yaml(client, COUNTED)

    assert [(p["record"], p.get("field")) for p in _problems(response)] == [
        ("3 item 2", "kind"), (4, "kind")]
    assert [raw.record for raw in read_yaml(COUNTED.replace("Gadget", "DataSource"))] == [
        1, "3 item 1", "3 item 2", 4]


def test_malformed_yaml_after_an_empty_document_names_its_position() -> None:
    with pytest.raises(IngestError) as caught:
        read_yaml("kind: DataSource\nname: a\n---\n---\nname: [unclosed\n")

    assert caught.value.problems[0].record == 3


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x1b", "\ufffe"])
def test_a_character_yaml_does_not_allow_is_refused_naming_document_and_line(
    store: GraphStore, character: str,
) -> None:
    # PyYAML's reader refuses the text before parsing it, outside the parser's errors:
    # a 500, and a traceback from the CLI.
    text = f"kind: DataSource\nname: a\n---\nkind: DataSource\nname: b{character}\n"
    with client_for(store) as client:
        response = post_yaml(client, text)

    [problem] = _problems(response)
    assert problem["record"] == 2
    assert problem["message"].startswith("malformed YAML at line 5, column 8: the character "
                                         f"U+{ord(character):04X}")
    assert store.find() == []


def test_the_cli_names_a_file_and_document_position(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    (tmp_path / "registry.yaml").write_text(COUNTED)

    result = run_cli("ingest", "manifests", str(tmp_path), *cli_args(store, request))

    assert result.exit_code == 1
    assert "registry.yaml#3 item 2" in result.output and "registry.yaml#4," in result.output
    assert store.find() == []


def test_a_json_array_numbers_its_items() -> None:
    assert [raw.record for raw in read_json('[{"kind": "DataSource"}, {}]')] == [1, 2]


# -- re-sent bundles ----------------------------------------------------------------------------

EVALUATION = """\
kind: Evaluation
suite: triage-eval-v4
run: 2026-06-10
target: bundle:support-triage@14
score: 0.94
threshold: 0.9
report_uri: s3://evals/report.html
"""
EVAL_ID = "eval:triage-eval-v4/2026-06-10"
APPROVAL_ID = "approval:bundle:support-triage@14/zyql"


def test_re_sending_a_bundle_leaves_its_evaluation_and_approval_alone(
    store: GraphStore,
) -> None:
    load(store, PARTS)
    with client_for(store) as client:
        assert post_yaml(client, SEED_BUNDLE).status_code == 200
        assert post_yaml(client, EVALUATION).status_code == 200
        audit_before = store.audit_log()
        before = snapshot(store)
        response = post_yaml(client, SEED_BUNDLE)

    assert response.status_code == 200, response.text
    assert (response.json()["created"], response.json()["updated"]) == (0, 0)
    assert snapshot(store) == before
    assert store.get([EVAL_ID])[EVAL_ID].properties["report_uri"] == "s3://evals/report.html"
    assert [a.action for a in store.audit_log()[len(audit_before):]] == ["ingest.manifests"]


def test_re_sending_a_bundle_twice_writes_no_annotation_audit(store: GraphStore) -> None:
    load(store, PARTS)
    load(store, SEED_BUNDLE)
    load(store, SEED_BUNDLE)

    for target in (EVAL_ID, APPROVAL_ID):
        assert [(a.action, a.before is None) for a in store.audit_log(target=target)] == [
            ("upsert", True)]


def test_a_bundle_eval_edit_updates_its_fields_and_keeps_the_others(store: GraphStore) -> None:
    load(store, PARTS)
    load(store, SEED_BUNDLE)
    load(store, EVALUATION)

    load(store, SEED_BUNDLE.replace("score: 0.94", "score: 0.95"))

    evaluation = store.get([EVAL_ID])[EVAL_ID]
    assert (evaluation.properties["score"], evaluation.properties["report_uri"]) == (
        0.95, "s3://evals/report.html")
    latest = store.audit_log(target=EVAL_ID)[-1]
    assert (latest.before["score"], latest.after["score"]) == (0.94, 0.95)


def test_an_approval_document_and_a_bundle_approving_alike_load_together(
    store: GraphStore,
) -> None:
    load(store, PARTS)
    load(store, SEED_BUNDLE + "---\nkind: Approval\ntarget: bundle:support-triage@14\n"
                              "approved_by: zyql\ncomment: checked the evals\n")
    load(store, SEED_BUNDLE)

    approval = store.get([APPROVAL_ID])[APPROVAL_ID]
    assert approval.properties["comment"] == "checked the evals"


# -- empty names --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "field"), [
    ("kind: DataSource\nname: ''\n", "name"),
    ("kind: DataSource\nname: '  '\n", "name"),
    ("kind: Toolset\nname: ''\nversion: 1\n", "name"),
    ("kind: TrainingRun\nrun_id: ''\n", "run_id"),
    ("kind: Evaluation\nsuite: ''\nrun: r\ntarget: model:m@1\n", "suite"),
    ("kind: Approval\ntarget: model:m@1\napproved_by: ''\n", "approved_by"),
    ("name: b\nversion: 1\nmodel: m\neval: { suite: s, run: '' }\n", "eval.run"),
    ("name: b\nversion: 1\nmodel: m\napproved_by: [zyql, '']\n", "approved_by.1"),
    ("kind: StageMove\nbundle: b\nversion: 1\nenvironment: ''\n", "environment"),
])
def test_an_empty_name_is_refused_naming_the_field(
    store: GraphStore, text: str, field: str,
) -> None:
    with client_for(store) as client:
        response = post_yaml(client, text)

    problems = _problems(response)
    assert [(p["record"], p["field"]) for p in problems] == [(1, field)]
    assert "empty" in problems[0]["message"]
    assert store.find() == []


@pytest.mark.parametrize(("value", "says"), [
    (".nan", "not a finite number"), ("-.inf", "not a finite number"),
    ('"\\ud800"', "not valid Unicode: a lone surrogate escape"),
])
def test_yaml_values_json_bodies_refuse_are_refused_naming_document_and_field(
    value: str, says: str,
) -> None:
    text = f"kind: DataSource\nname: ok\n---\nkind: DataSource\nname: bad\nx: [1, {value}]\n"
    with pytest.raises(IngestError) as raised:
        read_yaml(text)

    assert [(p.record, p.field, p.message.startswith(says))
            for p in raised.value.problems] == [(2, "x.1", True)]
