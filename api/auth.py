"""Who may call the API, with what scope, and how much they may send.

Scopes are hierarchical: ``admin`` ⊇ ``write`` ⊇ ``read``. A token granted ``write`` may
also read; ``admin`` may do everything. Reads (GET routes, ``POST /graphql``) need
``read``; any other REST method needs ``write``; a GraphQL mutation field needs what its
permission class says (``NeedsWrite``, ``NeedsAdmin``); a REST route may ask for more with
``Depends(require_scope("admin"))``.

Tokens are append-only records in the graph store itself: collection ``token`` (key
``NAME/ID``, payload: name, id, scopes, SHA-256 of the secret, created_at) and
``token.revoked`` (same key). The secret is never stored. Revoking then re-creating a name
gives a new ID, hence a new key. Open mode — every request is ``anonymous`` with every
scope — holds only while no token record has ever existed (and ``require_auth`` is off);
once one has, every route but ``/healthz`` needs a valid token, even after all are
revoked, so revoking the last token locks the server rather than opening it.

Lookups are cached per process for ``token_cache_s`` seconds (default 5): a token revoked
by another process (the CLI) stops working within that time plus one store read; one
created or revoked through this process takes effect at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from graphql import ExecutionResult, GraphQLError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose
from strawberry.extensions import SchemaExtension
from strawberry.permission import BasePermission
from strawberry.types import Info, get_object_definition
from strawberry.types.graphql import OperationType

from lineagegraph.graph.deadline import DeadlinePassed
from lineagegraph.graph.registry import governed_changes
from lineagegraph.graph.store import GraphStore, StoreUnavailable
from lineagegraph.schema import AuditEntry, Edge, Node, Record, StageMove

from .errors import (
    on_graphql,
    problem_response,
    timed_out,
    unavailable_message,
    unavailable_response,
)
from .graphql_types import UserError
from .settings import Settings

log = logging.getLogger(__name__)

# -- scopes and principals ----------------------------------------------------------------

SCOPES = ("read", "write", "admin")  # each implies the ones before it
READ, WRITE, ADMIN = SCOPES


def implied(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes a grant carries: ``{"write"}`` → ``{"read", "write"}``."""
    granted = set(scopes)
    top = max((SCOPES.index(s) for s in granted if s in SCOPES), default=-1)
    return frozenset(SCOPES[: top + 1])


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's name (the audit actor) and its effective scopes, the
    hierarchy already applied (``Principal("ci", {"write"}).scopes`` holds ``read``)."""

    name: str
    scopes: frozenset[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", implied(self.scopes))


ANONYMOUS = Principal("anonymous", frozenset(SCOPES))


def principal_of(request: Any) -> Principal | None:
    """The principal the middleware set on this request (or websocket), if any."""
    state = getattr(request, "state", None)
    return getattr(state, "principal", None) if state is not None else None


# -- tokens in the store ----------------------------------------------------------------

TOKENS = "token"
REVOKED = "token.revoked"
SECRET_PREFIX = "lg_"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# Actors the service writes itself: a token with one of these names would blur the audit log.
RESERVED_NAMES = frozenset({ANONYMOUS.name, "cli", "system"})


def is_reserved(name: str) -> bool:
    """A name only the service's own actors go by, in any case (``CLI`` too)."""
    return name.casefold() in RESERVED_NAMES


class TokenError(ValueError):
    """A token operation that cannot be done as asked (bad name or scope, name taken…)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    name: str
    token_id: str
    scopes: tuple[str, ...]  # as granted; effective scopes follow the hierarchy
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.name}/{self.token_id}"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def refused(self) -> bool:
        """Active but with a reserved name, which an older version let tokens have: it
        does not authenticate, lest the audit log credit its writes to the service."""
        return self.active and is_reserved(self.name)

    def describe(self) -> dict[str, Any]:
        """For audit entries and listings: everything but the hash."""
        return {"name": self.name, "id": self.token_id, "scopes": list(self.scopes)}


def hash_secret(secret: str) -> str:
    # A fast hash is enough: the secret is 256 random bits, not a password, so there is
    # nothing to guess; a slow salted hash would cost every request without adding safety.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_scopes(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"read,write"`` → ``("read", "write")``, in hierarchy order; unknown scopes fail."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = {s.strip().lower() for s in items if s.strip()}
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise TokenError(f"scopes: expected some of {', '.join(SCOPES)}; got {text!r}")
    return tuple(s for s in SCOPES if s in scopes)


def _read_tokens(store: GraphStore) -> list[tuple[TokenInfo, str]]:
    """Every token ever created, oldest first, with its revocation time and hash."""
    revoked = {r.key: r.at for r in store.all_records(REVOKED)}
    return [
        (TokenInfo(name=r.payload["name"], token_id=r.payload["id"],
                   scopes=tuple(r.payload["scopes"]),
                   created_at=datetime.fromisoformat(r.payload["created_at"]),
                   revoked_at=revoked.get(r.key)), r.payload["hash"])
        for r in store.all_records(TOKENS)
    ]


def list_tokens(store: GraphStore) -> list[TokenInfo]:
    """Every token ever created, oldest first, with when it was revoked."""
    return [info for info, _ in _read_tokens(store)]


def create_token(store: GraphStore, name: str, scopes: str | Iterable[str], *,
                 actor: str) -> tuple[TokenInfo, str]:
    """Issue a token: its record and audit entry in one transaction. Returns the secret,
    which exists nowhere else — the caller shows it once."""
    if not NAME_PATTERN.fullmatch(name) or is_reserved(name):
        raise TokenError(f"name: {name!r} must be 1-64 of letters, digits, '.', '_', '@', "
                         f"'-' (starting with a letter or digit) and not one of "
                         f"{', '.join(sorted(RESERVED_NAMES))}")
    granted = parse_scopes(scopes)
    if any(t.name == name and t.active for t in list_tokens(store)):
        raise TokenError(f"an active token named {name!r} exists; revoke it first")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    info = TokenInfo(name=name, token_id=secrets.token_hex(6), scopes=granted,
                     created_at=datetime.now(UTC))
    record = Record(collection=TOKENS, key=info.key, at=info.created_at, payload={
        **info.describe(), "hash": hash_secret(secret), "hash_alg": "sha256",
        "created_at": info.created_at.isoformat()})
    result = store.upsert(records=[record], audit=[AuditEntry(
        action="token.create", target=f"token:{name}", actor=actor, at=info.created_at,
        after=info.describe())])
    if result.records_added != 1:  # a random ID already taken: never hand out a dud
        raise TokenError(f"token ID collision for {name!r}; try again")
    _changed()
    return info, secret


def revoke_token(store: GraphStore, name: str, *, actor: str) -> list[TokenInfo]:
    """Revoke the active token(s) named ``name``; returns what was revoked."""
    active = [t for t in list_tokens(store) if t.name == name and t.active]
    if not active:
        raise TokenError(f"no active token named {name!r}")
    at = datetime.now(UTC)
    store.upsert(
        records=[Record(collection=REVOKED, key=t.key, at=at,
                        payload={"name": t.name, "id": t.token_id, "actor": actor})
                 for t in active],
        audit=[AuditEntry(action="token.revoke", target=f"token:{name}", actor=actor, at=at,
                          before=t.describe(), after={"revoked_at": at.isoformat()})
               for t in active])
    _changed()
    return active


# -- the per-process cache ---------------------------------------------------------------

_generation = 0  # bumped by create/revoke in this process: caches reload at once
_generation_lock = threading.Lock()


def _changed() -> None:
    global _generation
    with _generation_lock:
        _generation += 1


@dataclass(frozen=True, slots=True)
class TokenSet:
    """A snapshot: the active tokens' hashes with their principals."""

    active: tuple[tuple[str, Principal], ...]
    configured: bool  # a token has existed: open mode is over
    refused: tuple[tuple[str, str], ...] = ()  # (hash, name) of ``TokenInfo.refused`` ones

    def authenticate(self, secret: str) -> Principal | None:
        digest = hash_secret(secret)
        found = None
        for known, principal in self.active:  # no early exit: the time says nothing
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def refused_name(self, secret: str) -> str | None:
        """The name of the refused token ``secret`` is, to say why it fails."""
        digest = hash_secret(secret)
        return next((name for known, name in self.refused
                     if hmac.compare_digest(known, digest)), None)


_warned_refused: set[str] = set()  # keys of refused tokens logged in this process
_warned_lock = threading.Lock()


def _warn_refused(tokens: Iterable[TokenInfo]) -> None:
    """One warning per refused token per process (not per load, nor per request)."""
    for token in tokens:
        with _warned_lock:
            if not token.refused or token.key in _warned_refused:
                continue
            _warned_refused.add(token.key)
        log.warning("token %r (id %s) has a reserved name and no longer authenticates: "
                    "create another (lineagegraph token create) and revoke it "
                    "(lineagegraph token revoke %s)", token.name, token.token_id, token.name)


class TokenCache:
    """Active tokens, re-read from the store at most every ``ttl_s`` seconds (at once
    after a create/revoke in this process). Once it has seen a token it never reports
    open mode again, even if the store is wiped under a running server."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded: tuple[float, int, TokenSet] | None = None
        self._seen_tokens = False

    def fresh(self) -> TokenSet | None:
        """The snapshot if still valid, without touching the store."""
        if self._loaded is None:
            return None
        at, generation, tokens = self._loaded
        if generation != _generation or self._clock() - at >= self._ttl:
            return None
        return tokens

    def load(self, store: GraphStore) -> TokenSet:
        with self._lock:  # one reader refreshes; the others wait and reuse its snapshot
            tokens = self.fresh()
            if tokens is None:
                # Stamped before reading, so the bound counts from the read's start.
                at, generation = self._clock(), _generation
                found = _read_tokens(store)
                self._seen_tokens |= bool(found)
                _warn_refused(t for t, _ in found)
                tokens = TokenSet(
                    active=tuple((digest, Principal(t.name, frozenset(t.scopes)))
                                 for t, digest in found if t.active and not t.refused),
                    configured=self._seen_tokens,
                    refused=tuple((digest, t.name) for t, digest in found if t.refused))
                self._loaded = (at, generation, tokens)
            return tokens


# -- answers ----------------------------------------------------------------------------

REALM = 'Bearer realm="lineagegraph"'


class AuthError(Exception):
    status = 401
    code = "UNAUTHENTICATED"

    def __init__(self, message: str, challenge: str = REALM,
                 required_scope: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.challenge = challenge
        self.required_scope = required_scope

    def response(self, path: str = "") -> JSONResponse:
        extra = {} if self.required_scope is None else {"required_scope": self.required_scope}
        return problem_response(self.message, None, self.status,
                                {"WWW-Authenticate": self.challenge}, code=self.code,
                                path=path, **extra)


class MissingScope(AuthError):
    status = 403
    code = "FORBIDDEN"

    def __init__(self, principal: Principal, needed: str, what: str = "this") -> None:
        have = ", ".join(s for s in SCOPES if s in principal.scopes) or "none"
        super().__init__(f"{what} needs the {needed!r} scope; token {principal.name!r} has: "
                         f"{have}", f'{REALM}, error="insufficient_scope", scope="{needed}"',
                         required_scope=needed)


def admin_work(nodes: Iterable[Node], edges: Iterable[Edge],
               stage_moves: Sequence[StageMove] = (),
               stored: Mapping[str, Node] | None = None) -> str | None:
    """What in a write only ``admin`` may do (stage moves and approvals, design §8, and
    changes to what the gates read, to a registered version's content or to whether a
    node is archived: ``governed_changes`` against ``stored``), said for the refusal;
    None when there is nothing. A manifest's ``status`` and ``approved_by`` are such
    writes too, so an ingest route checks what it mapped, not only its own name."""
    nodes = list(nodes)
    approvals = sorted({n.id for n in nodes if n.kind == "Approval"}
                       | {e.source for e in edges if e.type == "APPROVES"})
    what = []
    governed = governed_changes(nodes, stored or {})
    if governed:
        what.append(f"changes only admin may make to stored nodes "
                    f"({', '.join(governed[:3])}{', …' if len(governed) > 3 else ''})")
    if stage_moves:
        what.append(f"{len(stage_moves)} stage move(s) ("
                    f"{', '.join(_move_text(m) for m in stage_moves[:3])}"
                    f"{', …' if len(stage_moves) > 3 else ''})")
    if approvals:
        what.append(f"{len(approvals)} approval(s) ("
                    f"{', '.join(approvals[:3])}{', …' if len(approvals) > 3 else ''})")
    return f"recording {' and '.join(what)}" if what else None


def _move_text(move: StageMove) -> str:
    return f"{move.name}@{move.to_version or '-'} into {move.environment}"


def require_admin_for(principal: Principal | None, nodes: Iterable[Node],
                      edges: Iterable[Edge], stage_moves: Sequence[StageMove] = (),
                      stored: Mapping[str, Node] | None = None) -> None:
    """``MissingScope`` when the write holds ``admin_work`` and the caller lacks ``admin``."""
    what = admin_work(nodes, edges, stage_moves, stored)
    if what is None:
        return
    if principal is None:  # no middleware ran: refuse rather than guess
        raise AuthError("no authenticated principal on this request")
    if ADMIN not in principal.scopes:
        raise MissingScope(principal, ADMIN, what)


STORE_CHECK_MIN_S = 5.0


def store_check_s(settings: Settings) -> float:
    """How long the token check and the readiness probe wait for a store that does not
    answer: a query's budget, but never under a few seconds (a budget set for queries
    should not fail every request under load)."""
    return max(settings.query_timeout_s, STORE_CHECK_MIN_S)


def no_answer(seconds: float) -> str:
    return f"no answer within {seconds:g}s"


class TokensUnavailable(AuthError):
    """The tokens cannot be read: refused (fail closed) as every request that meets an
    unavailable store is, a 503 to retry (``errors.unavailable_response``)."""

    status = 503
    code = "STORE_UNAVAILABLE"

    def response(self, path: str = "") -> JSONResponse:
        return unavailable_response(self.message, path)


class CrossOrigin(AuthError):
    status = 403
    code = "CROSS_ORIGIN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this
    machine's loopback."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_open_mode_origin(headers: Headers) -> None:
    """In open mode any caller has every scope, and a browser attaches nothing to tell a
    web page's request from the user's: a page on any site could post a StageMove to the
    server on the user's loopback. Browsers send ``Origin`` with such requests, so one from
    anywhere but loopback (or ``null``) is refused; scripts and curl send none."""
    origin = headers.get("origin")
    if origin is None:
        return
    host = urlsplit(origin).hostname
    if host is None or not is_loopback(host):
        raise CrossOrigin(f"open mode serves this machine only: a request from {origin!r} "
                          "is refused (create a token to serve other origins)")


def check_open_mode_host(headers: Headers) -> None:
    """DNS rebinding: a page on a name its owner points at 127.0.0.1 after loading is, to
    the browser, its own origin — it may read GET answers and sends no ``Origin``. But the
    browser names that host in ``Host``, so open mode answers only requests addressed to
    this machine: a loopback address, ``localhost`` (and ``*.localhost``, which browsers
    resolve themselves), or a name of one label (the machine's own; a rebinding name lies
    in a domain its owner controls, so it has a dot)."""
    host = urlsplit(f"//{headers.get('host', '')}").hostname or ""
    if is_loopback(host) or host.endswith(".localhost") or (host and "." not in host
                                                            and ":" not in host):
        return
    raise CrossOrigin(f"open mode serves this machine only: a request addressed to "
                      f"{headers.get('host', '')!r} is refused (address it as 127.0.0.1 or "
                      "localhost, or create a token)")


def bearer_secret(headers: Headers) -> str:
    value = headers.get("authorization", "")
    scheme, _, secret = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthError("this route needs a bearer token: Authorization: Bearer <token>")
    return secret.strip()


# -- which scope a route needs -----------------------------------------------------------

OPEN_PATHS = frozenset({"/healthz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required_scope(method: str, path: str) -> str:
    """The baseline scope of a request. GraphQL is read at the door; its mutation fields
    check their own scope. Any other method that is not a read is a write (fail safe)."""
    if method in SAFE_METHODS or on_graphql(path):
        return READ
    return WRITE


def require_scope(scope: str) -> Callable[[Request], Principal]:
    """A dependency for routes needing more than their method's baseline:
    ``@router.post("/promote", dependencies=[Depends(require_scope(ADMIN))])``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(request: Request) -> Principal:
        principal = principal_of(request)
        if principal is None:  # no middleware ran: refuse rather than guess
            raise AuthError("no authenticated principal on this request")
        if scope not in principal.scopes:
            raise MissingScope(principal, scope)
        return principal

    return dependency


# -- middleware -------------------------------------------------------------------------


class BearerAuth:
    """Authenticates every HTTP and websocket request but ``/healthz`` and sets
    ``request.state.principal``; answers 401/403/503 itself, before any body is read."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.require_auth = settings.require_auth
        self.timeout_s = settings.query_timeout_s
        self.check_s = store_check_s(settings)
        self.cache = TokenCache(settings.token_cache_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._principal(scope)
            if principal is ANONYMOUS:
                headers = Headers(scope=scope)
                check_open_mode_origin(headers)
                check_open_mode_host(headers)
            needed = required_scope(scope.get("method", "GET"), scope["path"])
            if needed not in principal.scopes:
                raise MissingScope(principal, needed)
        except AuthError as error:
            refusal = (error.response(scope["path"]) if scope["type"] == "http"
                       else WebSocketClose(code=1008, reason=error.code))
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _principal(self, scope: Scope) -> Principal:
        tokens = self.cache.fresh()
        if tokens is None:
            store = scope["app"].state.store
            try:
                # Bounded here too: a Neo4j that hangs (a frozen process, a dropped network)
                # answers nothing until the driver's read timeout (minutes), and every
                # request would queue behind this read.
                tokens = await asyncio.wait_for(run_in_threadpool(self.cache.load, store),
                                                self.check_s)
            except (StoreUnavailable, DeadlinePassed, TimeoutError) as error:  # fail closed
                if isinstance(error, DeadlinePassed):  # Neo4j's statement limit: too slow
                    error = StoreUnavailable(store.name, timed_out(self.timeout_s))
                elif isinstance(error, TimeoutError):
                    error = StoreUnavailable(store.name, no_answer(self.check_s))
                raise TokensUnavailable(unavailable_message(error, "token check")) from None
        if not tokens.configured and not self.require_auth:
            return ANONYMOUS
        secret = bearer_secret(Headers(scope=scope))
        principal = tokens.authenticate(secret)
        if principal is None:
            refused = tokens.refused_name(secret)
            raise AuthError(f"token {refused!r} has a reserved name: create another and "
                            "revoke it" if refused is not None
                            else "the bearer token is not valid (unknown or revoked)",
                            f'{REALM}, error="invalid_token"')
        return principal


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyStalled(HTTPException):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"request body paused over {timeout_s:g} s")


class BodySizeLimit:
    """413 for bodies over ``max_bytes``: at once when Content-Length says so, else as
    soon as the streamed chunks pass it — the body is never buffered here. 408 for a body
    that pauses over ``timeout_s`` between two chunks: a client that declared a body and
    went quiet (crashed mid-send behind a half-open connection, or trickling on purpose)
    would otherwise hold its connection, and on an ingest route its turn in the body
    budget, for as long as the socket stays open — two of them held every ingest turn."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def _refusal(self, path: str, error: HTTPException) -> JSONResponse:
        if isinstance(error, BodyStalled):
            return problem_response(f"{error.detail} (LINEAGEGRAPH_BODY_TIMEOUT_S); nothing "
                                    "was written", None, 408, path=path,
                                    headers={"Connection": "close"})
        return problem_response(f"request body larger than {self.max_bytes} bytes "
                                "(LINEAGEGRAPH_MAX_BODY_BYTES)", None, 413, path=path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refusal(scope["path"], BodyTooLarge(self.max_bytes))(
                scope, receive, send)
            return
        received = 0
        body_done = started = replaced = False
        refused: HTTPException | None = None

        async def limited_receive() -> Message:
            nonlocal received, body_done, refused
            if body_done or not self.timeout_s:  # past the body: waiting for a disconnect
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), self.timeout_s)
                except TimeoutError:
                    refused = BodyStalled(self.timeout_s)
                    log.info("request body paused over %g s: %s %s answered 408",
                             self.timeout_s, scope["method"], scope["path"])
                    raise refused from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = BodyTooLarge(self.max_bytes)
                    raise refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if refused is not None and not started:
                # Whatever the app made of the error (a 400, a 500), the answer is ours.
                started = replaced = True
                await self._refusal(scope["path"], refused)(scope, receive, send)
            if replaced:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        # The error is answered just below, unless a response was already under way.
        with contextlib.suppress(BodyTooLarge, BodyStalled):
            await self.app(scope, limited_receive, guarded_send)
        if refused is not None and not started:
            await self._refusal(scope["path"], refused)(scope, receive, send)


# -- installing -------------------------------------------------------------------------


def install_auth(app: FastAPI, settings: Settings) -> None:
    """Bearer auth outermost (a caller without a token never gets a body read), then the
    body size limit; 401/403 from ``require_scope``; the scheme in OpenAPI."""
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       timeout_s=settings.body_timeout_s)
    app.add_middleware(BearerAuth, settings=settings)

    async def auth_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, AuthError)
        return error.response()

    app.add_exception_handler(AuthError, auth_error)
    _document_bearer(app)


def _document_bearer(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # cached by FastAPI as app.openapi_schema; amended in place
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer",
            "description": "lineagegraph token create NAME --scopes read,write,admin"}
        schema["security"] = [{"bearer": []}]
        for path in OPEN_PATHS:
            for operation in schema.get("paths", {}).get(path, {}).values():
                operation["security"] = []
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# -- GraphQL ----------------------------------------------------------------------------


class Forbidden(UserError):
    """Shown unmasked (a ``UserError``), with ``extensions.code`` FORBIDDEN."""

    extensions = {"code": "FORBIDDEN"}


class _NeedsScope(BasePermission):
    scope: ClassVar[str]
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = principal_of(getattr(info.context, "request", None))
        return principal is not None and self.scope in principal.scopes

    def on_unauthorized(self) -> None:
        raise Forbidden(self.message or "")


class NeedsWrite(_NeedsScope):
    """``@strawberry.mutation(permission_classes=[NeedsWrite])``: ingest and upserts."""

    scope = WRITE
    message = "this field needs the 'write' scope"


class NeedsAdmin(_NeedsScope):
    """``@strawberry.mutation(permission_classes=[NeedsAdmin])``: promote, rollback,
    approve and overrides."""

    scope = ADMIN
    message = "this field needs the 'admin' scope"


def _guarded(field: Any) -> bool:
    """Whether a mutation field refuses itself to a principal without ``write``."""
    return any(isinstance(guard, type) and issubclass(guard, _NeedsScope)
               and WRITE in implied({guard.scope}) for guard in field.permission_classes)


def unguarded_mutations(schema: Any) -> list[str]:
    """The mutation fields of a strawberry schema with no permission class needing
    ``write`` or more (``NeedsWrite``, ``NeedsAdmin``)."""
    mutation = getattr(schema, "mutation", None)
    definition = get_object_definition(mutation) if mutation is not None else None
    return [] if definition is None else [
        field.python_name for field in definition.fields if not _guarded(field)]


class MutationsNeedWrite(SchemaExtension):
    """A schema-wide floor under the field permissions: no mutation field runs for a
    principal without ``write``.

    Where every mutation field carries a permission class needing ``write`` or more, each
    refuses itself (README "Tokens"): null with a FORBIDDEN error naming the scope, its
    resolver never run, the rest of the operation answered — for a read token as for a
    write token on an admin field. Where one does not (a field that forgot its class), a
    mutation operation from a principal without ``write`` is refused whole, before any
    resolver runs: that field still cannot be reached with a read token."""

    def on_execute(self) -> Any:
        context = self.execution_context
        try:
            is_mutation = context.operation_type is OperationType.MUTATION
        except Exception:  # no such operation: graphql-core reports it as it executes
            is_mutation = False
        if is_mutation and unguarded_mutations(context.schema):
            principal = principal_of(getattr(context.context, "request", None))
            if principal is None or WRITE not in principal.scopes:
                context.result = ExecutionResult(data=None, errors=[GraphQLError(
                    "mutations need the 'write' scope", extensions={"code": "FORBIDDEN"})])
        yield
