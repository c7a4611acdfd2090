"""All configuration, in one place: environment variables, each with a ``--flag`` twin on
the CLI (``lineagegraph serve --neo4j-uri …`` overrides ``NEO4J_URI``)."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import TYPE_CHECKING, Annotated

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lineagegraph.graph.governance import GatePolicy
from lineagegraph.graph.store import GraphStore
from lineagegraph.graph.walk import WalkLimits
from lineagegraph.schema.models import check_environment, validation_message

if TYPE_CHECKING:
    import neo4j

# The schemes of the Bolt protocol. The driver also takes http(s):// (its preview Query API,
# which needs aiohttp, not installed): refused as a bad value rather than a traceback.
BOLT_SCHEMES = frozenset({"bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"})


def _env(name: str) -> AliasChoices:
    # Accept the field name itself too, so CLI flags can pass overrides by field name.
    return AliasChoices(name, name.lower())


class StoreUnreachable(Exception):
    """The configured store cannot be opened; the message says which and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LINEAGEGRAPH_", populate_by_name=True,
                                      extra="ignore")

    # The store: Neo4j when a URI is set, else the embedded SQLite file.
    neo4j_uri: str | None = Field(None, validation_alias=_env("NEO4J_URI"))
    neo4j_user: str = Field("neo4j", validation_alias=_env("NEO4J_USER"))
    neo4j_password: str | None = Field(None, validation_alias=_env("NEO4J_PASSWORD"))
    neo4j_database: str = Field("neo4j", validation_alias=_env("NEO4J_DATABASE"))
    db: str = Field("./lineagegraph.db", validation_alias=_env("LINEAGEGRAPH_DB"))
    neo4j_writes_in_flight: int = Field(
        2, ge=1, le=16, description="batches `ingest outcomes` writes at once on Neo4j (two "
        "keep a two-core box busy: bench/README.md)")
    neo4j_write_retry_s: float = Field(
        5.0, ge=0, le=300, description="how long a Neo4j write is retried through transient "
        "failures (a deadlock, a restart, Neo4j unreachable) before the store is answered "
        "unavailable; the driver's own default is 30 s, which with its back-off kept a write "
        "to a stopped Neo4j waiting 31-66 s")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    # Bounds on every walk and query.
    max_depth: int = Field(20, ge=1, description="cap on walk depth (lineage, "
                           "trace, blastRadius, driftSources)")
    max_nodes: int = Field(10_000, ge=1, description="cap on nodes one walk returns")
    max_walk_chars: int = Field(32 * 2**20, ge=0, description="characters of large "
                                "properties (each over 4,096) one walk reads; past it the "
                                "walk leaves out the nodes and edges that hold them")
    # At most a day: the Neo4j driver's transaction timeout holds no infinity (`inf` or
    # 1e300 crashed the server at start), and a longer budget bounds nothing.
    query_timeout_s: float = Field(10.0, gt=0, le=86_400, description="per-query time limit "
                                   "(one budget for all of an operation's store work)")
    warm_up: bool = Field(True, description="run the analyses once at start-up, so that "
                          "Neo4j has planned their statements before the first caller")
    warm_up_check_s: float = Field(15.0, ge=0, description="how often to check whether "
                                   "Neo4j restarted, to warm it up again (0: never)")
    # Each running query holds up to one walk's caps: this many at once bounds their sum.
    query_workers: int | None = Field(None, ge=1, le=256, description="threads running "
                                      "GraphQL store work at once, the rest waiting within "
                                      "their query's time budget (default: CPUs + 4, at "
                                      "most 32)")
    graphql_max_depth: int = Field(12, ge=1, description="GraphQL query depth limit")
    graphql_max_tokens: int = Field(5_000, ge=10, description="GraphQL document token limit")
    graphql_max_aliases: int = Field(50, ge=1, description="GraphQL aliases per document")
    graphql_max_walks: int = Field(10, ge=1, description="graph walks (lineage, trace, "
                                   "blastRadius, driftSources, …) per GraphQL operation")

    # Access (api/auth.py): tokens live in the store; these bound what a caller may send
    # and how long a token revoked by another process may still be accepted.
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1, description="largest request body")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="how long a request body "
                                  "may pause between two chunks before a 408")
    # An ingest request holds ~12× its body in memory while it is written (api/admission.py).
    ingest_budget_bytes: int | None = Field(None, ge=1, description="bytes of request bodies "
                                            "the ingest routes process at once, the rest "
                                            "waiting their turn (default: twice the largest "
                                            "request body)")
    ingest_wait_s: float = Field(30.0, ge=0, le=3600, description="how long an ingest request "
                                 "waits for its turn before a 503")
    token_cache_s: float = Field(5.0, ge=0, description="how long token lookups are cached")
    require_auth: bool = Field(False, description="never serve open, even with no token")

    # Promotion gates.
    # NoDecode: the variable is parsed by _list_setting as the flag is, so a bad value is a
    # ValidationError naming it (the usage error of for_cli), not the env source's own error.
    production_environments: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["production"],
        description="environments where the pinned-model and policy gates apply")
    floating_model_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["latest", "*-latest", "*:latest", "*@latest"],
        description="model names that are floating aliases (fnmatch patterns)")

    @field_validator("production_environments", "floating_model_patterns", mode="before")
    @classmethod
    def _list_setting(cls, value: object) -> object:
        """A list setting as its variable or flag gives it: a JSON list, or comma-separated."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except ValueError as error:
                raise ValueError(f"not a JSON list ({error})") from None
        return [item.strip() for item in value.split(",") if item.strip()]

    # An empty list (an unset template variable gives "") would switch gates off without a
    # word: with no production environment the policy gate applies nowhere and the
    # pinned-model gate only under regulated packs, and with no floating pattern
    # `gpt-5-latest` passes as pinned (design §3 names `latest` and `-latest` as what that
    # gate refuses). So neither may be empty.
    @field_validator("production_environments")
    @classmethod
    def _some_environment(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("empty: the production gates would apply nowhere; name at least "
                             "one environment (the default is production)")
        for name in value:
            check_environment(name)  # " production" would never match a promotion's target
        return value

    @field_validator("floating_model_patterns")
    @classmethod
    def _some_pattern(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("empty: no model name would count as a floating alias; name at "
                             "least one fnmatch pattern (the default is latest, *-latest, "
                             "*:latest, *@latest)")
        if not all(pattern.strip() for pattern in value):
            raise ValueError("a blank pattern matches no model name")
        return value

    @field_validator("db")
    @classmethod
    def _named_file(cls, value: str) -> str:
        # SQLite opens "" as a temporary database, gone when the process ends: everything
        # loaded into it (an unset template variable) would be lost without a word.
        if not value.strip():
            raise ValueError("empty: name the embedded store's file (unset, it is "
                             "./lineagegraph.db)")
        return value

    @field_validator("neo4j_uri")
    @classmethod
    def _bolt_uri(cls, value: str | None) -> str | None:
        """Only a Bolt URI: another scheme fails later, in the driver, as a traceback or a
        message that blames something else."""
        if not value:
            return value
        scheme, separator, _ = value.partition("://")
        if not separator or scheme.lower() not in BOLT_SCHEMES:
            raise ValueError(f"{value!r} is not a Bolt URI: expected bolt://host:7687 or "
                             f"neo4j://host (schemes: {', '.join(sorted(BOLT_SCHEMES))})")
        return value

    @classmethod
    def for_cli(cls, db: str | None = None, neo4j_uri: str | None = None,
                **flags: object) -> Settings:
        """Settings with CLI flags over the environment. An explicit ``--db`` means the
        embedded store even when NEO4J_URI is set in the environment."""
        overrides = {k: v for k, v in flags.items() if v is not None}
        if neo4j_uri:
            overrides["neo4j_uri"] = neo4j_uri
        elif db is not None:
            overrides["neo4j_uri"] = None
        if db is not None:  # "--db ''" is refused, not taken for no flag
            overrides["db"] = db
        try:
            return cls(**overrides)
        except ValidationError as error:
            # A usage error (exit 2, one line a problem), not a traceback.
            import typer

            raise typer.BadParameter("; ".join(
                f"{_where(e['loc'])}: {validation_message(e)}" for e in error.errors())) from None

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets ``field``."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        return f"{cls.model_config['env_prefix']}{field.upper()}"

    @property
    def gate_policy(self) -> GatePolicy:
        return GatePolicy(production_environments=frozenset(self.production_environments),
                          floating_model_patterns=tuple(self.floating_model_patterns))

    @property
    def store_label(self) -> str:
        return (f"Neo4j at {self.neo4j_uri}" if self.neo4j_uri
                else f"the embedded store at {self.db}")

    @property
    def ingest_budget(self) -> int:
        return self.ingest_budget_bytes or 2 * self.max_body_bytes

    @property
    def query_worker_count(self) -> int:
        # The default is the thread pool's own default, which this work used before.
        return self.query_workers or min(32, (os.cpu_count() or 1) + 4)

    @property
    def walk_limits(self) -> WalkLimits:
        return WalkLimits(max_depth=self.max_depth, max_nodes=self.max_nodes,
                          max_chars=self.max_walk_chars)

    def open_store(self) -> GraphStore:
        if self.neo4j_uri:
            import neo4j

            from lineagegraph.graph.neo4j_store import Neo4jStore

            try:
                return Neo4jStore(self.neo4j_uri, self.neo4j_user, self.neo4j_password,
                                  self.neo4j_database, query_timeout_s=self.query_timeout_s,
                                  parallel_writes=self.neo4j_writes_in_flight,
                                  write_retry_s=self.neo4j_write_retry_s)
            except (neo4j.exceptions.DriverError, neo4j.exceptions.Neo4jError,
                    ValueError) as error:
                raise StoreUnreachable(self._neo4j_problem(error)) from None
        from lineagegraph.graph.embedded import EmbeddedStore

        try:
            return EmbeddedStore(self.db)
        except (sqlite3.DatabaseError, OSError) as error:  # not SQLite, a directory, unreadable
            raise StoreUnreachable(f"cannot use the embedded store at {self.db} "
                                   f"({_where(('db',))}): {error}") from None

    def _neo4j_problem(self, error: neo4j.exceptions.DriverError
                       | neo4j.exceptions.Neo4jError | ValueError) -> str:
        """Why Neo4j cannot be used, on one line, naming the setting to fix: the database
        when the server has no such one, the credentials when it refuses them, else the
        URI (unreachable, malformed)."""
        import neo4j

        code = getattr(error, "code", None) or ""
        what = f"Neo4j at {self.neo4j_uri}"
        fields: tuple[str, ...] = ("neo4j_uri",)  # unreachable, malformed, anything else
        if code.startswith(("Neo.ClientError.Database.", "Neo.TransientError.Database.")):
            # no such database (DatabaseNotFound), or one that is offline
            what = f"Neo4j database {self.neo4j_database!r} at {self.neo4j_uri}"
            fields = ("neo4j_database",)
        elif (isinstance(error, neo4j.exceptions.AuthError)
              or code.startswith("Neo.ClientError.Security.")):
            fields = ("neo4j_user", "neo4j_password")
        # A server's error prints as its code, message and GQL status: its message says it.
        detail = getattr(error, "message", None) if code else None
        settings = ", ".join(_where((field,)) for field in fields)
        # The driver's messages span lines (address, then reason): one line, as every error.
        return f"cannot use {what} ({settings}): {' '.join(str(detail or error).split())}"


def _where(loc: tuple[int | str, ...]) -> str:
    """A setting as its user sets it: ``LINEAGEGRAPH_PORT / --port``, the flag only when the
    running command has it (``serve`` has them all; ``trace`` has no ``--max-depth``)."""
    if not loc:
        return "settings"
    name = _field(str(loc[0]))
    flag = f"--{name.replace('_', '-')}"
    variable = Settings.env_name(name)
    return f"{variable} / {flag}" if _command_has(flag) else variable


def _field(name: str) -> str:
    """The field a validation error's location names: a value read from the environment
    is located by its variable (``NEO4J_URI``), one given by a flag by its field."""
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and name in alias.choices:
            return field
    return name


def _command_has(flag: str) -> bool:
    """Whether the command running now takes ``flag`` (no command, as when a test or the
    app builds settings: no flag to name)."""
    try:  # a recent typer runs on its own copy of click, which holds the context
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context

    context = get_current_context(silent=True)
    return context is not None and any(flag in param.opts for param in context.command.params)

