"""All configuration, in one place: environment variables, each with a ``--flag`` twin on
the CLI (``lineagegraph serve --neo4j-uri …`` overrides ``NEO4J_URI``)."""

from __future__ import annotations

import json
import sqlite3
from typing import Annotated

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lineagegraph.graph.governance import GatePolicy
from lineagegraph.graph.store import GraphStore
from lineagegraph.graph.walk import WalkLimits


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
        2, ge=1, le=16, description="batches a bulk load writes at once on Neo4j (two "
        "keep a two-core box busy: bench/README.md)")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    # Bounds on every walk and query.
    max_depth: int = Field(20, ge=1, description="cap on lineage depth")
    max_nodes: int = Field(10_000, ge=1, description="cap on nodes one walk returns")
    query_timeout_s: float = Field(10.0, gt=0, description="per-query time limit (one budget "
                                   "for all of an operation's store work)")
    warm_up: bool = Field(True, description="run the analyses once at start-up, so that "
                          "Neo4j has planned their statements before the first caller")
    graphql_max_depth: int = Field(12, ge=1, description="GraphQL query depth limit")
    graphql_max_tokens: int = Field(5_000, ge=10, description="GraphQL document token limit")
    graphql_max_aliases: int = Field(50, ge=1, description="GraphQL aliases per document")
    graphql_max_walks: int = Field(10, ge=1, description="graph walks (lineage, trace, "
                                   "blastRadius, driftSources, …) per GraphQL operation")

    # Access (api/auth.py): tokens live in the store; these bound what a caller may send
    # and how long a token revoked by another process may still be accepted.
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1, description="largest request body")
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

    @classmethod
    def for_cli(cls, db: str | None = None, neo4j_uri: str | None = None,
                **flags: object) -> Settings:
        """Settings with CLI flags over the environment. An explicit ``--db`` means the
        embedded store even when NEO4J_URI is set in the environment."""
        overrides = {k: v for k, v in flags.items() if v is not None}
        if neo4j_uri:
            overrides["neo4j_uri"] = neo4j_uri
        elif db:
            overrides["neo4j_uri"] = None
        if db:
            overrides["db"] = db
        try:
            return cls(**overrides)
        except ValidationError as error:
            # A usage error (exit 2, one line a problem), not a traceback.
            import typer

            raise typer.BadParameter("; ".join(
                f"{_where(e['loc'])}: {e['msg']}" for e in error.errors())) from None

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
        return f"neo4j at {self.neo4j_uri}" if self.neo4j_uri else f"embedded at {self.db}"

    @property
    def walk_limits(self) -> WalkLimits:
        return WalkLimits(max_depth=self.max_depth, max_nodes=self.max_nodes)

    def open_store(self) -> GraphStore:
        if self.neo4j_uri:
            import neo4j

            from lineagegraph.graph.neo4j_store import Neo4jStore

            try:
                return Neo4jStore(self.neo4j_uri, self.neo4j_user, self.neo4j_password,
                                  self.neo4j_database, query_timeout_s=self.query_timeout_s,
                                  parallel_writes=self.neo4j_writes_in_flight)
            except (neo4j.exceptions.DriverError, neo4j.exceptions.Neo4jError,
                    ValueError) as error:
                raise StoreUnreachable(f"cannot use Neo4j at {self.neo4j_uri} (NEO4J_URI): "
                                       f"{error}") from None
        from lineagegraph.graph.embedded import EmbeddedStore

        try:
            return EmbeddedStore(self.db)
        except (sqlite3.DatabaseError, OSError) as error:  # not SQLite, a directory, unreadable
            raise StoreUnreachable(f"cannot use the embedded store at {self.db} "
                                   f"(LINEAGEGRAPH_DB / --db): {error}") from None


def _where(loc: tuple[int | str, ...]) -> str:
    """A setting as its user sets it: ``LINEAGEGRAPH_PORT / --port``."""
    if not loc:
        return "settings"
    name = str(loc[0])
    return f"{Settings.env_name(name)} / --{name.replace('_', '-')}"

