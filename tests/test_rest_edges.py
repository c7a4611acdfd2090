"""REST and GraphQL transport edges, on both stores: bad query parameters and bodies are a
4xx with a JSON body naming what is wrong (never a 500), a refused OpenLineage event says it
was kept as a dead letter, a REST replay is audited under the caller's token, and /metrics
counts every response, refusals included."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import create_token, install_auth
from lineagegraph.api.metrics import install_metrics
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest.batch import Problem
from lineagegraph.ingest.deadletter import dead_letter, pending
from lineagegraph.ingest.manifest_formats import read_directory
from lineagegraph.ingest.manifests import map_manifests
from lineagegraph.ingest.openlineage import COLLECTION

from .ingest_support import MANIFESTS, cli_args, run_cli
from .openlineage_support import run_event
from .servers import error_code

OPEN = Settings(neo4j_uri=None)
JSON = {"Content-Type": "application/json"}
GZIP = {**JSON, "Content-Encoding": "gzip"}
OUTCOME = {"request_id": "req-r", "timestamp": "2026-11-20T10:00:00Z",
           "environment": "production", "bundle": "support-triage@14"}


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    with TestClient(create_app(OPEN, store=store)) as test_client:
        yield test_client


@pytest.fixture
def secrets(store: GraphStore) -> dict[str, str]:
    """One token per scope, named for it."""
    return {name: create_token(store, name, scope, actor="test")[1]
            for name, scope in (("reader", "read"), ("writer", "write"), ("admin", "admin"))}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def refusal(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    """The project's error body: {"error", "problems": [{record?, field?, message}]}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["problems"], body
    return body


def fields_named(response: httpx.Response) -> list[str | None]:
    return [p.get("field") for p in refusal(response)["problems"]]


def graphql_refusal(response: httpx.Response) -> str:
    """A GraphQL transport error as GraphQL clients read one: JSON, status 400."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    (error,) = response.json()["errors"]
    return error["message"]


# -- GET /api/v1/events/lineage ------------------------------------------------------------


@pytest.mark.parametrize("cursor", [
    "99999999999999999999999", str(2**63), "²", "-1", "1e3", " 1", "0x10",
])
def test_a_cursor_the_store_cannot_hold_is_a_400_naming_cursor(
    client: TestClient, cursor: str,
) -> None:
    response = client.get("/api/v1/events/lineage", params={"cursor": cursor})

    assert fields_named(response) == ["cursor"]


def test_the_largest_cursor_the_store_holds_is_an_empty_last_page(client: TestClient) -> None:
    client.post("/api/v1/lineage", json=run_event())

    response = client.get("/api/v1/events/lineage", params={"cursor": str(2**63 - 1)})

    assert response.json() == {"events": [], "nextCursor": None}


@pytest.mark.parametrize(("name", "value"), [
    ("after", "9999-12-31T23:59:59-23:59"),
    ("before", "0001-01-01T00:00:00+23:59"),
    ("after", "nonsense"),
    ("before", "2026-13-01T00:00:00Z"),
])
def test_a_date_that_is_no_utc_time_is_a_400_naming_it(
    client: TestClient, name: str, value: str,
) -> None:
    response = client.get("/api/v1/events/lineage", params={name: value})

    assert fields_named(response) == [name]


@pytest.mark.parametrize("limit", ["-1", "0", "1001", "99999999999999999999999", "ten"])
def test_an_events_limit_outside_1_to_1000_is_a_400_naming_limit(
    client: TestClient, limit: str,
) -> None:
    response = client.get("/api/v1/events/lineage", params={"limit": limit})

    assert fields_named(response) == ["limit"]


def test_dates_with_an_offset_still_select_by_utc_time(client: TestClient) -> None:
    client.post("/api/v1/lineage", json=run_event())  # eventTime 2026-11-10T02:00Z

    inside = client.get("/api/v1/events/lineage", params={"after": "2026-11-10T03:59+02:00"})
    outside = client.get("/api/v1/events/lineage", params={"after": "2026-11-10T04:01+02:00"})

    assert len(inside.json()["events"]) == 1
    assert outside.json()["events"] == []


# -- dead letters over REST ----------------------------------------------------------------


@pytest.mark.parametrize("limit", ["-1", "0", "1001", "99999999999999999999999"])
def test_the_dead_letter_list_refuses_a_limit_outside_1_to_1000(
    client: TestClient, store: GraphStore, limit: str,
) -> None:
    store.upsert(records=[dead_letter("outcomes", {"n": n}, [Problem("bad")]) for n in range(3)])

    response = client.get("/api/v1/deadletter", params={"limit": limit})

    assert fields_named(response) == ["limit"]


def test_the_dead_letter_list_returns_at_most_limit_letters(
    client: TestClient, store: GraphStore,
) -> None:
    store.upsert(records=[dead_letter("outcomes", {"n": n}, [Problem("bad")]) for n in range(3)])

    listed = client.get("/api/v1/deadletter", params={"limit": 2}).json()["items"]

    assert len(listed) == 2


@pytest.mark.parametrize("body", [
    b'{"keys": [NaN]}', b'{"keys": ["\\ud800"]}', b'{"keys": ["ab\\udfffcd"]}',
    b'{"keys": [Infinity]}', b'{"keys": 7}',
])
def test_replay_refuses_keys_that_are_not_unicode_strings_with_a_400(
    client: TestClient, body: bytes,
) -> None:
    response = client.post("/api/v1/deadletter/replay", content=body, headers=JSON)

    assert fields_named(response)[0].startswith("keys")  # type: ignore[union-attr]


def test_replay_refuses_a_body_nested_too_deeply_with_a_400(client: TestClient) -> None:
    body = '{"keys": ' + "[" * 100_000 + "]" * 100_000 + "}"

    response = client.post("/api/v1/deadletter/replay", content=body, headers=JSON)

    refusal(response)


def _replayable_letters(store: GraphStore) -> None:
    """One outcome and one OpenLineage event whose causes are gone: both replay."""
    map_manifests(read_directory(MANIFESTS), store, actor="test").write(store)
    store.upsert(records=[dead_letter("outcomes", OUTCOME, [Problem("was unknown")]),
                          dead_letter("openlineage", run_event(), [Problem("was bad")])])


def test_a_rest_replay_is_audited_under_the_token_name(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    _replayable_letters(store)
    before = len(store.audit_log())
    with TestClient(create_app(OPEN, store=store)) as client:
        response = client.post("/api/v1/deadletter/replay", headers=bearer(secrets["writer"]))

    assert response.status_code == 200, response.text
    assert len(response.json()["replayed"]) == 2
    written = store.audit_log()[before:]
    assert {e.action for e in written} >= {"ingest.outcomes", "ingest.openlineage"}
    assert {e.actor for e in written} == {"writer"}


def test_replay_refuses_a_misspelled_field_naming_it_and_replays_nothing(
    client: TestClient, store: GraphStore,
) -> None:
    _replayable_letters(store)
    letters = [letter.key for letter in pending(store)]

    response = client.post("/api/v1/deadletter/replay", json={"key": [letters[0][:12]]})

    # Ignored, the typo left `keys` unset: every pending letter was replayed.
    assert fields_named(response) == ["key"]
    assert [letter.key for letter in pending(store)] == letters


def test_replay_takes_a_gzip_body_as_every_ingest_route_does(
    store: GraphStore,
) -> None:
    _replayable_letters(store)
    first, second = (letter.key for letter in pending(store))
    packed = gzip.compress(json.dumps({"keys": [first[:12]]}).encode())
    settings = Settings(neo4j_uri=None, max_body_bytes=1000)
    with TestClient(create_app(settings, store=store)) as client:
        replayed = client.post("/api/v1/deadletter/replay", content=packed, headers=GZIP)
        not_gzip = client.post("/api/v1/deadletter/replay", content=b'{"keys": []}',
                               headers=GZIP)
        too_large = client.post("/api/v1/deadletter/replay", headers=GZIP, content=gzip.compress(
            json.dumps({"keys": ["x" * 2000]}).encode()))

    assert replayed.status_code == 200, replayed.text
    assert list(replayed.json()["replayed"]) == [first]
    assert [letter.key for letter in pending(store)] == [second]
    assert "not gzip" in refusal(not_gzip)["problems"][0]["message"]
    assert too_large.status_code == 413 and too_large.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_a_cli_replay_keeps_the_mappers_own_actors(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    _replayable_letters(store)
    before = len(store.audit_log())

    result = run_cli("deadletter", "replay", *cli_args(store, request))

    assert result.exit_code == 0, result.output
    actors = {e.action: e.actor for e in store.audit_log()[before:]}
    assert actors["ingest.outcomes"] == "deadletter.replay"
    assert actors["ingest.openlineage"] == "openlineage"


# -- POST /api/v1/lineage: what a refusal says was written ---------------------------------


def test_an_invalid_event_says_it_was_kept_as_a_dead_letter_under_its_key(
    client: TestClient, store: GraphStore,
) -> None:
    response = client.post("/api/v1/lineage", json={})

    body = refusal(response)
    (letter,) = pending(store)
    assert "nothing was written" not in body["error"]
    assert "dead letter" in body["error"] and letter.key[:12] in body["error"]
    assert body["deadLetterKey"] == letter.key
    listed = client.get("/api/v1/deadletter").json()["items"]
    assert [item["key"] for item in listed] == [letter.key]


@pytest.mark.parametrize("body", [b"{not json", b"[{}]"])
def test_an_unread_lineage_body_keeps_nothing_and_says_so(
    client: TestClient, store: GraphStore, body: bytes,
) -> None:
    response = client.post("/api/v1/lineage", content=body, headers=JSON)

    assert refusal(response)["error"] == "invalid input; nothing was written"
    assert pending(store) == []
    assert store.records(COLLECTION) == []


@pytest.mark.parametrize(("route", "body", "content_type"), [
    ("/api/v1/manifests", b"kind: Nonsense\nname: x\n", "application/yaml"),
    ("/api/v1/outcomes", b'{"request_id": "r"}\n', "application/x-ndjson"),
])
def test_manifest_and_outcome_refusals_still_say_nothing_was_written(
    client: TestClient, store: GraphStore, route: str, body: bytes, content_type: str,
) -> None:
    response = client.post(route, content=body, headers={"Content-Type": content_type})

    assert "nothing was written" in refusal(response)["error"]
    assert pending(store) == []


# A time no record may hold: the schema's validator refuses it with its own words.
FUTURE = "2999-01-01T00:00:00Z"
IN_THE_FUTURE = "2999-01-01T00:00:00+00:00 is in the future"


@pytest.mark.parametrize(("route", "body", "content_type", "field"), [
    ("/api/v1/manifests", f"kind: DataSource\nname: x\ncreated_at: {FUTURE}\n",
     "application/yaml", "created_at"),
    ("/api/v1/outcomes", json.dumps({**OUTCOME, "timestamp": FUTURE}), "application/x-ndjson",
     "timestamp"),
    ("/api/v1/lineage", json.dumps({**run_event(), "eventTime": FUTURE}), "application/json",
     "eventTime"),
])
def test_a_validators_message_reaches_the_caller_without_pydantics_prefix(
    client: TestClient, route: str, body: str, content_type: str, field: str,
) -> None:
    response = client.post(route, content=body, headers={"Content-Type": content_type})

    (problem,) = refusal(response)["problems"]
    assert problem["field"] == field
    assert problem["message"].startswith(IN_THE_FUTURE), problem  # not "Value error, 2999…"


def test_a_dead_letters_reason_and_its_replay_say_a_validators_message_without_a_prefix(
    client: TestClient,
) -> None:
    client.post("/api/v1/lineage", json={**run_event(), "eventTime": FUTURE})

    (listed,) = client.get("/api/v1/deadletter").json()["items"]
    still_failing = client.post("/api/v1/deadletter/replay", json={}).json()["still_failing"]

    assert listed["reason"].startswith(f"field eventTime: {IN_THE_FUTURE}"), listed
    assert listed["problems"][0]["message"].startswith(IN_THE_FUTURE)
    assert still_failing[listed["key"]].startswith(f"field eventTime: {IN_THE_FUTURE}")


# -- /graphql transport errors ---------------------------------------------------------------


def test_graphql_malformed_json_is_a_json_400(client: TestClient) -> None:
    response = client.post("/graphql", content=b"{bad", headers=JSON)

    assert "JSON" in graphql_refusal(response)


def test_graphql_a_mutation_over_get_is_a_json_400(client: TestClient) -> None:
    response = client.get("/graphql", params={"query": "mutation { __typename }"})

    assert "GET" in graphql_refusal(response)


def test_graphql_an_unsupported_content_type_is_a_json_400(client: TestClient) -> None:
    response = client.post("/graphql", content=b"{ __typename }",
                           headers={"Content-Type": "text/plain"})

    assert "content type" in graphql_refusal(response).lower()


@pytest.mark.parametrize("where", ["body", "query string"])
def test_graphql_a_deeply_nested_request_is_a_json_400_not_a_500(
    client: TestClient, where: str,
) -> None:
    levels = 100_000 if where == "body" else 5_000  # a URL holds less; both pass the parser's
    deep = "[" * levels + "]" * levels
    if where == "body":
        body = '{"query": "{ __typename }", "variables": {"a": ' + deep + "}}"
        response = client.post("/graphql", content=body.encode(), headers=JSON)
    else:
        response = client.get("/graphql", params={"query": "{ __typename }",
                                                  "variables": '{"a": ' + deep + "}"})

    assert "nested too deeply" in graphql_refusal(response)


@pytest.mark.parametrize("body", [b'{"query": "{ __typename }", "variables": {"a": NaN}}',
                                  b'{"query": "{ __typename }", "variables": {"a": "\\ud800"}}',
                                  b'{"query": "{ __typename }"}\xff'])
def test_graphql_a_body_that_is_not_json_the_service_can_answer_is_a_json_400(
    client: TestClient, body: bytes,
) -> None:
    graphql_refusal(client.post("/graphql", content=body, headers=JSON))


def test_graphql_takes_a_gzip_body_as_the_ingest_routes_do(client: TestClient) -> None:
    body = gzip.compress(json.dumps({"query": "{ __typename }"}).encode())

    answered = client.post("/graphql", content=body, headers=GZIP)
    not_gzip = client.post("/graphql", content=b'{"query": "{ __typename }"}', headers=GZIP)

    assert answered.json() == {"data": {"__typename": "Query"}}
    assert "not gzip" in graphql_refusal(not_gzip)


def test_graphql_refuses_a_gzip_body_past_the_limit_in_graphql_shape(store: GraphStore) -> None:
    settings = OPEN.model_copy(update={"max_body_bytes": 1000})
    body = gzip.compress(json.dumps({"query": "{ __typename }", "pad": "x" * 5000}).encode())
    with TestClient(create_app(settings, store=store)) as small:
        response = small.post("/graphql", content=body, headers=GZIP)

    assert response.status_code == 413
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE" and "decompressed" in error["message"]


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH"])
def test_graphql_a_method_it_does_not_serve_is_a_405_allowing_get_and_post(
    client: TestClient, method: str,
) -> None:
    response = client.request(method, "/graphql")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert error_code(response) == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize(("query", "variables", "code"), [
    ("query($t: DateTime!) { auditLog(since: $t) { seq } }", {"t": "not-a-date"},
     "BAD_USER_INPUT"),
    ("query($t: DateTime!) { auditLog(since: $t) { seq } }", {}, "BAD_USER_INPUT"),
    ('{ auditLog(since: "2026-13-01") { seq } }', None, "GRAPHQL_VALIDATION_FAILED"),
    ("{ nosuch }", None, "GRAPHQL_VALIDATION_FAILED"),
    ("{ auditLog { seq ", None, "GRAPHQL_PARSE_FAILED"),
])
def test_graphql_errors_before_any_field_runs_carry_a_code(
    client: TestClient, query: str, variables: dict[str, Any] | None, code: str,
) -> None:
    response = client.post("/graphql", json={"query": query, "variables": variables})

    assert response.status_code == 200
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == [code]


def test_graphql_still_serves_graphiql_and_get_queries(client: TestClient) -> None:
    page = client.get("/graphql", headers={"Accept": "text/html"})
    query = client.get("/graphql", params={"query": "{ __typename }"})

    assert page.status_code == 200 and "graphiql" in page.text.lower()
    assert query.json() == {"data": {"__typename": "Query"}}


# -- /metrics ---------------------------------------------------------------------------------


def counted(text: str, method: str, route: str, status: int) -> int:
    labels = re.escape(f'method="{method}",route="{route}",status="{status}"')
    found = re.search(rf"lineagegraph_requests_total\{{{labels}\}} (\d+)", text)
    return int(found.group(1)) if found else 0


def test_metrics_count_401_403_and_413_refusals_by_route(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    settings = Settings(neo4j_uri=None, max_body_bytes=1000)
    with TestClient(create_app(settings, store=store)) as client:
        client.get("/readyz")
        client.post("/api/v1/manifests", headers=bearer(secrets["reader"]), json={})
        client.post("/api/v1/manifests", headers=bearer(secrets["writer"]),
                    content=b"x" * 2000)
        text = client.get("/metrics", headers=bearer(secrets["reader"])).text

    assert counted(text, "GET", "/readyz", 401) == 1
    assert counted(text, "POST", "/api/v1/manifests", 403) == 1
    assert counted(text, "POST", "/api/v1/manifests", 413) == 1


def test_metrics_label_the_docs_pages_by_their_own_routes(client: TestClient) -> None:
    client.get("/docs")
    client.get("/openapi.json")
    client.get("/no/such/page")
    text = client.get("/metrics").text

    assert counted(text, "GET", "/docs", 200) == 1
    assert counted(text, "GET", "/openapi.json", 200) == 1
    assert counted(text, "GET", "unmatched", 404) == 1


def test_metrics_count_made_up_methods_as_one_other_method(client: TestClient) -> None:
    for n in range(40):
        client.request(f"M{n:04d}X", "/readyz")
    client.request("PATCH", "/readyz")
    text = client.get("/metrics").text

    # The raw method as a label let any caller, token or none, grow /metrics without bound.
    assert 'method="M' not in text
    assert counted(text, "OTHER", "/readyz", 405) == 40
    assert counted(text, "PATCH", "/readyz", 405) == 1


def test_metrics_label_a_path_only_by_a_template_the_app_serves(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    # A route with a parameter: requests refused before routing (no token) carry only their
    # raw path, which must never become a label.
    router = APIRouter(prefix="/api/items")

    @router.get("/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    app = FastAPI()
    app.state.store = store
    app.include_router(router)
    install_auth(app, OPEN)
    install_metrics(app)
    with TestClient(app) as client:
        for n in range(30):
            client.get(f"/api/items/{n}")
        client.get("/api/items/7", headers=bearer(secrets["reader"]))
        client.get("/api/nothing/here")
        text = client.get("/metrics", headers=bearer(secrets["reader"])).text

    routes = set(re.findall(r'route="([^"]*)"', text))
    assert routes == {"/api/items/{item_id}", "unmatched"}
    assert counted(text, "GET", "/api/items/{item_id}", 401) == 30
    assert counted(text, "GET", "/api/items/{item_id}", 200) == 1


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("GET", "/api/v1/nothing-here", None, 404, "NOT_FOUND"),
    ("DELETE", "/api/v1/outcomes", None, 405, "METHOD_NOT_ALLOWED"),
    ("POST", "/api/v1/manifests", "x", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("POST", "/api/v1/outcomes", "{", 400, "BAD_REQUEST"),
])
def test_every_rest_error_has_one_shape_with_a_code(
    client: TestClient, method: str, path: str, body: str | None, status: int, code: str,
) -> None:
    # 4xx bodies came as {error, problems}, {error, code} or both, by who answered them.
    headers = {"Content-Type": "text/csv" if status == 415 else "application/x-ndjson"}
    response = client.request(method, path, content=body, headers=headers)

    assert response.status_code == status, response.text
    assert error_code(response) == code
