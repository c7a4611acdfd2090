"""Scoped bearer tokens on both stores: kept hashed, checked on every route but /healthz
(401 without a valid token, 403 with too small a scope), GraphQL mutation permissions,
the audit actor, open mode, the body size limit, the CLI and ``serve``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from strawberry.extensions import MaskErrors
from strawberry.fastapi import GraphQLRouter

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import (
    ADMIN,
    REVOKED,
    TOKENS,
    BodySizeLimit,
    MutationsNeedWrite,
    NeedsAdmin,
    NeedsWrite,
    Principal,
    TokenCache,
    TokenError,
    create_token,
    install_auth,
    list_tokens,
    require_scope,
    revoke_token,
    unguarded_mutations,
)
from lineagegraph.api.deps import ActorDep
from lineagegraph.api.graphql_schema import LineageSchema, _should_mask, build_schema
from lineagegraph.api.graphql_types import Context
from lineagegraph.api.settings import Settings
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import GraphStore
from lineagegraph.schema import Record

from .ingest_support import cli_args, run_cli
from .servers import EMBEDDED_ENV, cli, error_code
from .servers import serving as serve_process

OPEN = Settings(neo4j_uri=None)
NOT_LET_IN = (401, 403)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def secrets(store: GraphStore) -> dict[str, str]:
    """One token per scope, named for it."""
    return {name: create_token(store, name, scope, actor="test")[1]
            for name, scope in (("reader", "read"), ("writer", "write"), ("admin", "admin"))}


@contextmanager
def serving(store: GraphStore, settings: Settings = OPEN) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store=store)) as client:
        yield client


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, from its OpenAPI document plus the docs
    pages; path parameters filled with a placeholder."""
    found = [(method.upper(), re.sub(r"\{[^}]+\}", "x", path))
             for path, operations in app.openapi()["paths"].items()
             for method in operations if method in ("get", "post", "put", "patch", "delete")]
    return [*found, ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json")]


def guarded(app: FastAPI) -> list[tuple[str, str]]:
    return [(method, path) for method, path in routes(app) if path != "/healthz"]


def call(client: TestClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    if method != "GET":
        kwargs.setdefault("json", {})
    return client.request(method, path, **kwargs)


# -- scopes and the store ----------------------------------------------------------------


def test_scopes_are_hierarchical_admin_over_write_over_read() -> None:
    assert Principal("a", frozenset({"admin"})).scopes == {"read", "write", "admin"}
    assert Principal("w", frozenset({"write"})).scopes == {"read", "write"}
    assert Principal("r", frozenset({"read"})).scopes == {"read"}


def test_the_store_keeps_a_hash_of_the_secret_never_the_secret(store: GraphStore) -> None:
    info, secret = create_token(store, "ci", "read,write", actor="test")

    kept = store.records(TOKENS)
    everything = json.dumps([r.model_dump(mode="json") for r in kept]
                            + [e.model_dump(mode="json") for e in store.audit_log()])
    assert secret.startswith("lg_") and len(secret) > 40
    assert secret not in everything
    assert [r.payload["hash"] for r in kept] == [hashlib.sha256(secret.encode()).hexdigest()]
    assert list_tokens(store) == [info]
    assert info.scopes == ("read", "write")


def test_a_revoked_name_can_be_created_again_and_only_the_new_secret_works(
    store: GraphStore,
) -> None:
    first, old = create_token(store, "ci", "read", actor="test")
    revoke_token(store, "ci", actor="test")
    second, new = create_token(store, "ci", "write", actor="test")

    tokens = TokenCache(ttl_s=60).load(store)
    assert first.key != second.key
    assert [(t.name, t.active) for t in list_tokens(store)] == [("ci", False), ("ci", True)]
    assert tokens.authenticate(old) is None
    assert tokens.authenticate(new) == Principal("ci", frozenset({"write"}))
    assert [e.action for e in store.audit_log(target="token:ci")] == [
        "token.create", "token.revoke", "token.create"]


def test_create_refuses_a_taken_name_a_bad_name_and_unknown_scopes(store: GraphStore) -> None:
    create_token(store, "ci", "read", actor="test")

    for name, scopes, problem in (("ci", "read", "revoke it first"),
                                  ("a/b", "read", "name"), ("anonymous", "read", "name"),
                                  # beside the open mode's actor in the audit log, one looks
                                  # like the other
                                  ("Anonymous", "read", "name"), ("SYSTEM", "read", "name"),
                                  ("ok", "read,root", "scopes"), ("ok", "", "scopes")):
        with pytest.raises(TokenError, match=problem):
            create_token(store, name, scopes, actor="test")
    assert [t.name for t in list_tokens(store)] == ["ci"]


def test_revoking_a_name_with_no_active_token_fails(store: GraphStore) -> None:
    with pytest.raises(TokenError, match="no active token named 'ghost'"):
        revoke_token(store, "ghost", actor="test")


def test_the_cache_rereads_the_store_once_its_time_is_up(store: GraphStore) -> None:
    clock = [100.0]
    cache = TokenCache(ttl_s=5, clock=lambda: clock[0])
    info, secret = create_token(store, "ci", "read", actor="test")
    assert cache.load(store).authenticate(secret) is not None
    # A revocation by another process: a record in the store, nothing said to this one.
    store.upsert(records=[Record(collection=REVOKED, key=info.key, payload={"name": "ci"})])

    clock[0] = 104.9
    assert cache.fresh() is not None and cache.fresh().authenticate(secret) is not None
    clock[0] = 105.0
    assert cache.fresh() is None
    assert cache.load(store).authenticate(secret) is None


# -- REST and the probes ----------------------------------------------------------------


def test_healthz_needs_no_token_even_when_tokens_exist(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    with serving(store) as client:
        assert client.get("/healthz").json() == {"status": "ok"}


def test_every_route_but_healthz_refuses_a_request_without_a_token(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    with serving(store) as client:
        answers = {(m, p): call(client, m, p) for m, p in guarded(client.app)}

    assert {("GET", "/readyz"), ("POST", "/graphql"), ("GET", "/docs")} <= set(answers)
    for route, response in answers.items():
        assert response.status_code == 401, route
        assert response.headers["www-authenticate"].startswith("Bearer"), route
        assert error_code(response) == "UNAUTHENTICATED", route


def test_every_route_refuses_an_unknown_a_malformed_or_a_revoked_token(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    revoke_token(store, "admin", actor="test")
    offered = {"unknown": bearer("lg_" + "x" * 43), "revoked": bearer(secrets["admin"]),
               "not bearer": {"Authorization": f"Basic {secrets['reader']}"}}
    with serving(store) as client:
        for what, headers in offered.items():
            for method, path in guarded(client.app):
                response = call(client, method, path, headers=headers)
                assert response.status_code == 401, (what, method, path)


def test_write_routes_refuse_a_read_token_naming_the_write_scope(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    with serving(store) as client:
        writes = [(m, p) for m, p in guarded(client.app) if m != "GET" and p != "/graphql"]
        answers = {(m, p): call(client, m, p, headers=bearer(secrets["reader"]))
                   for m, p in writes}

    assert ("POST", "/api/v1/manifests") in answers
    for route, response in answers.items():
        assert response.status_code == 403, route
        assert response.json()["required_scope"] == "write", route
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"], route


def test_each_route_lets_in_a_token_with_its_scope(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    with serving(store) as client:
        answers = {}
        for method, path in guarded(client.app):
            needed = "reader" if method == "GET" or path == "/graphql" else "writer"
            answers[method, path] = call(client, method, path, headers=bearer(secrets[needed]))
        query = client.post("/graphql", headers=bearer(secrets["reader"]),
                            json={"query": '{ node(id: "run:x") { id } }'})

    for route, response in answers.items():
        # Past the door, each route answers as it would: an empty body is its own 4xx.
        assert response.status_code not in NOT_LET_IN, (route, response.text)
    for route in (("GET", "/readyz"), ("GET", "/docs"), ("GET", "/openapi.json")):
        assert answers[route].status_code == 200, route
    assert query.json()["data"] == {"node": None} and "errors" not in query.json()


def test_a_rest_write_is_audited_under_the_token_name(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    with serving(store) as client:
        response = client.post("/api/v1/manifests", headers=bearer(secrets["writer"]),
                               json={"kind": "DataSource", "name": "wh.audited"})

    assert response.status_code == 200, response.text
    actors = {e.actor for e in store.audit_log() if not e.action.startswith("token.")}
    assert actors == {"writer"}


@pytest.mark.parametrize("document", [
    {"kind": "StageMove", "bundle": "b", "version": 1, "environment": "production"},
    {"name": "b", "version": 2, "model": "gpt-x-2026-01", "status": "production"},
    {"name": "b", "version": 3, "model": "gpt-x-2026-01", "approved_by": "someone"},
])
def test_manifests_that_move_stages_or_approve_need_admin(
    store: GraphStore, secrets: dict[str, str], document: dict[str, Any],
) -> None:
    # Stage moves and approvals need admin (design §8), also when a manifest records them.
    bundle = {"name": "b", "version": 1, "model": "gpt-x-2026-01"}
    with serving(store) as client:
        base = client.post("/api/v1/manifests", headers=bearer(secrets["writer"]), json=bundle)
        before = (len(store.audit_log()), store.stage_history(name="b"))
        refused = client.post("/api/v1/manifests", headers=bearer(secrets["writer"]),
                              json=document)
        after = (len(store.audit_log()), store.stage_history(name="b"))
        allowed = client.post("/api/v1/manifests", headers=bearer(secrets["admin"]),
                              json=document)

    assert base.status_code == 200, base.text
    assert refused.status_code == 403, refused.text
    assert refused.json()["required_scope"] == "admin"
    assert refused.json()["error"].startswith("recording 1 ")
    assert after == before  # nothing of the refused load was written
    assert allowed.status_code == 200, allowed.text


def test_a_route_may_require_more_than_its_baseline_scope(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    app = create_app(OPEN, store=store)

    @app.get("/test-only/admin", dependencies=[Depends(require_scope(ADMIN))])
    async def admin_only(actor: ActorDep) -> dict[str, str]:
        return {"actor": actor}

    with TestClient(app) as client:
        answers = {name: client.get("/test-only/admin", headers=bearer(secret))
                   for name, secret in secrets.items()}

    assert {name: r.status_code for name, r in answers.items()} == {
        "reader": 403, "writer": 403, "admin": 200}
    assert answers["writer"].json()["required_scope"] == "admin"
    assert answers["admin"].json() == {"actor": "admin"}


@pytest.mark.parametrize(("origin", "status"), [
    (None, 200), ("http://127.0.0.1:8000", 200), ("http://localhost:3000", 200),
    ("http://[::1]:8000", 200), ("https://evil.example", 403), ("null", 403),
    ("http://127.0.0.1.evil.example", 403),
])
def test_open_mode_refuses_requests_from_pages_of_other_origins(
    store: GraphStore, origin: str | None, status: int,
) -> None:
    # With no token any caller may write: a page elsewhere must not post through the
    # user's browser (no preflight for a body without a content type).
    headers = {"Content-Type": ""} | ({"Origin": origin} if origin else {})
    with serving(store) as client:
        response = client.post("/api/v1/manifests", headers=headers,
                               content=b"kind: DataSource\nname: wh.cross\n")

    assert response.status_code == status, response.text
    assert ("source:wh.cross" in store.get(["source:wh.cross"])) is (status == 200)
    if status == 403:
        assert response.json()["code"] == "CROSS_ORIGIN"



@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1:8000", 200), ("localhost:8000", 200), ("[::1]:8000", 200), ("laptop", 200),
    ("app.localhost", 200), ("rebind.evil.example:8000", 403), ("127.0.0.1.nip.io", 403),
    ("10.0.0.5:8000", 403),
])
def test_open_mode_answers_only_requests_addressed_to_this_machine(
    store: GraphStore, host: str, status: int,
) -> None:
    # A page whose name is re-pointed at 127.0.0.1 is its own origin to the browser: it
    # may read answers and sends no Origin, but its Host names it.
    with serving(store) as client:
        response = client.get("/readyz", headers={"Host": host})

    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["code"] == "CROSS_ORIGIN"
        assert host in response.json()["error"]

def test_a_token_holder_may_call_from_any_origin(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    with serving(store) as client:
        response = client.post("/api/v1/manifests", json={"kind": "DataSource", "name": "x"},
                               headers={**bearer(secrets["writer"]),
                                        "Origin": "https://dashboards.example"})

    assert response.status_code == 200, response.text


def test_open_mode_serves_everyone_as_anonymous_while_no_token_exists(
    store: GraphStore,
) -> None:
    with serving(store) as client:
        ready = client.get("/readyz")
        written = client.post("/api/v1/manifests", json={"kind": "DataSource", "name": "wh.o"})

    assert ready.status_code == 200
    assert written.status_code == 200, written.text
    assert {e.actor for e in store.audit_log()} == {"anonymous"}


def test_the_first_token_ends_open_mode_and_revoking_the_last_does_not_reopen_it(
    store: GraphStore,
) -> None:
    with serving(store, Settings(neo4j_uri=None, token_cache_s=3600)) as client:
        before = client.get("/readyz").status_code
        _, secret = create_token(store, "ci", "read", actor="test")
        with_token = client.get("/readyz", headers=bearer(secret)).status_code
        without = client.get("/readyz").status_code
        revoke_token(store, "ci", actor="test")
        after_revoke = client.get("/readyz", headers=bearer(secret)).status_code
        with_none_left = client.get("/readyz").status_code

    assert (before, with_token, without) == (200, 200, 401)
    assert (after_revoke, with_none_left) == (401, 401)


def test_require_auth_refuses_even_with_no_token_in_the_store(store: GraphStore) -> None:
    with serving(store, Settings(neo4j_uri=None, require_auth=True)) as client:
        assert client.get("/readyz").status_code == 401


def test_a_token_revoked_by_another_process_stops_working_within_the_cache_time(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    ttl = 0.3
    with serving(store, Settings(neo4j_uri=None, token_cache_s=ttl)) as client:
        assert client.get("/readyz", headers=bearer(secrets["reader"])).status_code == 200
        reader = next(t for t in list_tokens(store) if t.name == "reader")
        store.upsert(records=[Record(collection=REVOKED, key=reader.key,
                                     payload={"name": "reader"})])
        time.sleep(ttl + 0.05)
        assert client.get("/readyz", headers=bearer(secrets["reader"])).status_code == 401


def test_openapi_documents_the_bearer_scheme_and_the_open_healthz(store: GraphStore) -> None:
    app = create_app(OPEN, store=store)

    document = app.openapi()

    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_a_websocket_without_a_token_is_closed(store: GraphStore, secrets: dict[str, str]
                                              ) -> None:
    with serving(store) as client, pytest.raises(WebSocketDisconnect) as closed, \
            client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]):
        pass
    assert closed.value.code == 1008


@pytest.mark.parametrize("protocols", [["graphql-transport-ws"], ["graphql-ws"], []])
def test_graphql_offers_no_websocket_so_a_token_holder_s_handshake_is_refused_cleanly(
    store: GraphStore, secrets: dict[str, str], protocols: list[str],
) -> None:
    # The schema has no subscriptions. strawberry's websocket route built the context from
    # a Request, which a websocket is not: a 500 and a traceback, once a server could speak
    # websocket (uvicorn[standard]). No route now: closed before it is accepted (a 403).
    with serving(store) as client, pytest.raises(WebSocketDisconnect) as closed, \
            client.websocket_connect("/graphql", subprotocols=protocols,
                                     headers=bearer(secrets["admin"])):
        pass
    assert closed.value.code == 1000


# -- GraphQL: permission classes on mutation fields --------------------------------------


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hello"


RESOLVED: list[str] = []  # guarded resolvers that actually ran


@strawberry.type
class Mutation:
    @strawberry.mutation
    def echo(self, text: str) -> str:  # unguarded: a read in a mutation document
        return text

    @strawberry.mutation(permission_classes=[NeedsWrite])
    def upsert(self) -> str | None:
        RESOLVED.append("upsert")
        return "upserted"

    @strawberry.mutation(permission_classes=[NeedsAdmin])
    def promote(self) -> str | None:
        RESOLVED.append("promote")
        return "promoted"


def graphql_app(store: GraphStore, *extensions: Any, mutation: type = Mutation) -> FastAPI:
    """A test-only schema behind the real middleware, masking errors as the real one."""
    schema = LineageSchema(query=Query, mutation=mutation, extensions=[
        lambda: MaskErrors(should_mask_error=_should_mask), *extensions])
    app = FastAPI()
    app.state.store = store

    async def context() -> Context:
        return Context(store=store, settings=OPEN)

    app.include_router(GraphQLRouter(schema, context_getter=context), prefix="/graphql")
    install_auth(app, OPEN)
    return app


def gql(client: TestClient, secret: str, query: str, operation: str | None = None
        ) -> dict[str, Any]:
    response = client.post("/graphql", headers=bearer(secret),
                           json={"query": query, "operationName": operation})
    assert response.status_code == 200, response.text
    return response.json()


def refusals(result: dict[str, Any]) -> list[tuple[Any, str, str]]:
    return [(e.get("path"), e["extensions"]["code"], e["message"])
            for e in result.get("errors", [])]


MIXED = "query Look { hello } mutation Change { echo(text: \"hi\") upsert promote }"


def test_a_read_token_reads_but_its_write_mutation_field_is_refused(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    RESOLVED.clear()
    with TestClient(graphql_app(store)) as client:
        look = gql(client, secrets["reader"], MIXED, "Look")
        change = gql(client, secrets["reader"], MIXED, "Change")

    assert look == {"data": {"hello": "hello"}}
    # The refused fields are null with a FORBIDDEN error naming the scope; their resolvers
    # never ran. The unguarded field of the same operation is answered.
    assert change["data"] == {"echo": "hi", "upsert": None, "promote": None}
    assert RESOLVED == []
    assert refusals(change) == [
        (["upsert"], "FORBIDDEN", "this field needs the 'write' scope"),
        (["promote"], "FORBIDDEN", "this field needs the 'admin' scope")]


def test_write_mutations_need_write_and_admin_mutations_need_admin(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    with TestClient(graphql_app(store)) as client:
        writer = gql(client, secrets["writer"], MIXED, "Change")
        admin = gql(client, secrets["admin"], MIXED, "Change")

    assert writer["data"] == {"echo": "hi", "upsert": "upserted", "promote": None}
    assert refusals(writer) == [(["promote"], "FORBIDDEN", "this field needs the 'admin' scope")]
    assert admin == {"data": {"echo": "hi", "upsert": "upserted", "promote": "promoted"}}


def test_mutations_need_write_refuses_a_read_token_a_whole_operation_past_an_unguarded_field(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    # `echo` has no permission class: the floor refuses the operation before any resolver.
    with TestClient(graphql_app(store, MutationsNeedWrite)) as client:
        reader = gql(client, secrets["reader"], MIXED, "Change")
        reader_query = gql(client, secrets["reader"], MIXED, "Look")
        writer = gql(client, secrets["writer"], 'mutation { echo(text: "hi") }')

    assert reader["data"] is None
    assert refusals(reader) == [(None, "FORBIDDEN", "mutations need the 'write' scope")]
    assert reader_query == {"data": {"hello": "hello"}}
    assert writer == {"data": {"echo": "hi"}}


@strawberry.type
class GuardedMutation:
    @strawberry.mutation(permission_classes=[NeedsWrite])
    def upsert(self) -> str | None:
        RESOLVED.append("upsert")
        return "upserted"


def test_mutations_need_write_leaves_guarded_fields_to_refuse_themselves_one_by_one(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    RESOLVED.clear()
    with TestClient(graphql_app(store, MutationsNeedWrite, mutation=GuardedMutation)) as client:
        reader = gql(client, secrets["reader"], "mutation { __typename upsert }")

    assert unguarded_mutations(strawberry.Schema(query=Query, mutation=GuardedMutation)) == []
    assert reader["data"] == {"__typename": "GuardedMutation", "upsert": None}
    assert refusals(reader) == [(["upsert"], "FORBIDDEN", "this field needs the 'write' scope")]
    assert RESOLVED == []


def test_every_mutation_field_of_the_service_needs_write_or_admin() -> None:
    # What lets a read token's mutation fields be refused one by one, the rest answered
    # (README "Tokens"): with a field unguarded the floor refuses the whole operation.
    assert unguarded_mutations(build_schema(OPEN)) == []


READ_TOKEN_MUTATION = """
mutation Change($nodes: [NodeInput!]!) {
  __typename
  a: upsert(nodes: $nodes) { nodes { created } }
  ...Admin
}
fragment Admin on Mutation {
  b: promote(bundle: "support-triage", version: "1", environment: "staging") { promoted }
  rollback(name: "support-triage", environment: "staging") { warnings }
  approve(target: "bundle:support-triage@1") { id }
}
"""


def test_a_read_token_s_mutation_fields_are_refused_each_and_nothing_is_written(
    store: GraphStore, secrets: dict[str, str],
) -> None:
    before = (store.audit_log(), store.stage_history())
    with serving(store) as client:
        response = client.post("/graphql", headers=bearer(secrets["reader"]), json={
            "query": READ_TOKEN_MUTATION,
            "variables": {"nodes": [{"id": "source:x1"}, {"id": "bundle:support-triage@1"}]}})

    assert response.status_code == 200, response.text
    result = response.json()
    # As for a write token on an admin field: each field null with its FORBIDDEN error,
    # the rest of the operation answered (it was refused whole, `__typename` unanswered).
    assert result["data"] == {"__typename": "Mutation", "a": None, "b": None,
                              "rollback": None, "approve": None}
    assert refusals(result) == [
        (["a"], "FORBIDDEN", "this field needs the 'write' scope"),
        (["b"], "FORBIDDEN", "this field needs the 'admin' scope"),
        (["rollback"], "FORBIDDEN", "this field needs the 'admin' scope"),
        (["approve"], "FORBIDDEN", "this field needs the 'admin' scope")]
    assert store.get(["source:x1", "bundle:support-triage@1"]) == {}
    assert (store.audit_log(), store.stage_history()) == before


def test_graphql_needs_a_token_once_tokens_exist(store: GraphStore, secrets: dict[str, str]
                                                 ) -> None:
    with TestClient(graphql_app(store)) as client:
        response = client.post("/graphql", json={"query": "{ hello }"})

    assert response.status_code == 401


# -- the body size limit ------------------------------------------------------------------


@pytest.fixture
def small_limit(tmp_path: Path) -> Iterator[TestClient]:
    store = EmbeddedStore(tmp_path / "limits.db")
    with serving(store, Settings(neo4j_uri=None, max_body_bytes=1000)) as client:
        yield client
    store.close()


def test_a_body_declared_over_the_limit_is_refused_with_413(small_limit: TestClient) -> None:
    response = small_limit.post("/api/v1/manifests", content=b"x" * 1001,
                                headers={"content-type": "application/yaml"})

    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_a_streamed_body_over_the_limit_is_refused_with_413(small_limit: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"query": "' + b" " * 2000 + b'{ node(id: \\"run:x\\") { id } }"}'

    for path, content_type in (("/graphql", "application/json"),
                               ("/api/v1/outcomes", "application/x-ndjson")):
        response = small_limit.post(path, content=chunks(),
                                    headers={"content-type": content_type})
        assert "content-length" not in response.request.headers
        assert response.status_code == 413, (path, response.text)
        assert error_code(response) == "PAYLOAD_TOO_LARGE"


def test_a_body_within_the_limit_passes(small_limit: TestClient) -> None:
    response = small_limit.post("/graphql", json={"query": '{ node(id: "run:x") { id } }'})

    assert response.json()["data"] == {"node": None} and "errors" not in response.json()


def test_the_limit_stops_reading_a_stream_once_it_is_passed() -> None:
    pulled: list[int] = []
    sent: list[dict[str, Any]] = []

    async def reads_everything(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass

    async def receive() -> dict[str, Any]:
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 400, "more_body": len(pulled) < 10}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(BodySizeLimit(reads_everything, max_bytes=1000)(
        {"type": "http", "method": "POST", "path": "/", "headers": []}, receive, send))

    assert len(pulled) == 3  # 1200 bytes read of 4000: refused at the third chunk
    assert sent[0]["status"] == 413


# -- the CLI --------------------------------------------------------------------------------


def test_the_cli_creates_lists_and_revokes_tokens_under_the_cli_actor(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    flags = cli_args(store, request)

    created = run_cli("token", "create", "ci", "--scopes", "read,write", *flags)
    listed = run_cli("token", "list", *flags)
    revoked = run_cli("token", "revoke", "ci", *flags)
    relisted = run_cli("token", "list", *flags)

    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert re.fullmatch(r"lg_[A-Za-z0-9_-]{43}", secret)
    assert "shown once" in created.stderr
    stored_hash = store.records(TOKENS)[0].payload["hash"]
    assert listed.exit_code == 0
    assert "ci" in listed.stdout and "read,write" in listed.stdout
    assert secret not in listed.output and stored_hash not in listed.output
    assert revoked.exit_code == 0, revoked.output
    row = next(line for line in relisted.stdout.splitlines() if " ci " in line)
    assert len(re.findall(r"\d{4}-\d{2}-\d{2}", row)) == 2  # created and revoked
    assert [(e.action, e.actor) for e in store.audit_log(target="token:ci")] == [
        ("token.create", "cli"), ("token.revoke", "cli")]


def test_the_cli_names_what_is_wrong_and_exits_1(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    flags = cli_args(store, request)

    bad_scope = run_cli("token", "create", "ci", "--scopes", "root", *flags)
    unknown = run_cli("token", "revoke", "ghost", *flags)

    assert (bad_scope.exit_code, unknown.exit_code) == (1, 1)
    assert "scopes" in bad_scope.stderr and bad_scope.stdout == ""
    assert "no active token named 'ghost'" in unknown.stderr
    assert store.records(TOKENS) == []


# -- serve --------------------------------------------------------------------------------


# The served store is the --db file given, never a Neo4j the test run points at.


def test_serve_in_open_mode_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    result = subprocess.run(cli("serve", "--host", "0.0.0.0", "--db", str(tmp_path / "x.db")),
                            capture_output=True, text=True, timeout=60, env=EMBEDDED_ENV)

    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0" in result.stderr
    assert "lineagegraph token create" in result.stderr


def test_serve_binds_any_address_once_a_token_exists_and_asks_for_it(tmp_path: Path) -> None:
    db = tmp_path / "served.db"
    store = EmbeddedStore(db)
    _, secret = create_token(store, "ops", "read", actor="test")
    store.close()
    with serve_process("--host", "0.0.0.0", "--db", str(db)) as served:
        health = httpx.get(f"{served.base}/healthz")
        anonymous = httpx.get(f"{served.base}/readyz")
        with_token = httpx.get(f"{served.base}/readyz", headers=bearer(secret))
    output = served.output

    assert health.status_code == 200
    assert anonymous.status_code == 401
    assert with_token.status_code == 200
    assert with_token.json()["status"] == "ready" and with_token.json()["store"] == "embedded"
    assert "auth: 1 active token;" in output
    assert secret not in output
