"""The ``lineagegraph`` command."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

import lineagegraph.schema
from lineagegraph.graph.store import (
    MetadataMoved,
    StageMoved,
    StoreUnavailable,
    StoreUpgraded,
)

from . import cli_queries
from .auth import is_loopback, list_tokens
from .cli_demo import demo_command
from .cli_ingest import DbPath, NeoUri, deadletter_app, ingest_app
from .cli_reports import cannot_write, report_app
from .cli_retention import retention_app
from .cli_tokens import token_app
from .cli_traffic import traffic_app
from .settings import Settings, StoreUnreachable

# Help as click writes it (rich_markup_mode None, for every subcommand too): paragraphs
# rewrapped to the terminal. typer's rich help kept the docstrings' line breaks in a group's
# list of commands, and at 80 columns cut option names and environment variables short with
# "…" (LINEAGEGRAPH_MAX_D…).
app = typer.Typer(help="Lineage Graph: lineage and impact analysis for production AI.",
                  no_args_is_help=True, rich_markup_mode=None)
app.add_typer(ingest_app, name="ingest")
app.add_typer(deadletter_app, name="deadletter")
app.add_typer(token_app, name="token")
app.add_typer(report_app, name="report")
app.add_typer(retention_app, name="retention")
app.add_typer(traffic_app, name="traffic")
cli_queries.register(app)
app.command("demo")(demo_command)
console = Console(stderr=True)

# --flag twins of the settings; None means "not given": the environment (or default) holds.
NeoUser = Annotated[str | None, typer.Option("--neo4j-user", help="NEO4J_USER")]
NeoPassword = Annotated[str | None, typer.Option("--neo4j-password", help="NEO4J_PASSWORD")]
NeoDatabase = Annotated[str | None, typer.Option("--neo4j-database", help="NEO4J_DATABASE")]


def with_setting_flags(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with a ``--flag`` for every setting it does not declare itself (design
    §5: each setting has a twin), handed to it as ``flags``: the ones given, as text, for
    the settings to parse as they parse the environment."""
    own = inspect.signature(command, eval_str=True).parameters
    derived = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[str | None, typer.Option(
                              f"--{name.replace('_', '-')}",
                              help=f"{field.description or name} ({Settings.env_name(name)})",
                              show_default=False)])
        for name, field in Settings.model_fields.items() if name not in own]

    @functools.wraps(command)
    def run(**given: Any) -> None:
        flags = {p.name: given.pop(p.name) for p in derived}
        command(**given, flags={k: v for k, v in flags.items() if v is not None})

    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p for name, p in own.items() if name != "flags"] + derived)
    run.__annotations__ = {p.name: p.annotation for p in run.__signature__.parameters.values()}  # type: ignore[attr-defined]
    return run


@app.command()
@with_setting_flags
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (LINEAGEGRAPH_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (LINEAGEGRAPH_PORT)")] = None,
    neo4j_uri: NeoUri = None,
    neo4j_user: NeoUser = None,
    neo4j_password: NeoPassword = None,
    neo4j_database: NeoDatabase = None,
    db: DbPath = None,
    allow_open_bind: Annotated[bool, typer.Option(
        help="bind a non-loopback address with no tokens (only inside a container whose "
             "port is published on loopback)")] = False,
    flags: dict[str, str] | None = None,
) -> None:
    """Serve GraphQL at /graphql, /healthz, /readyz and OpenAPI at /docs."""
    import uvicorn

    from .app import create_app

    settings = Settings.for_cli(db, neo4j_uri, host=host, port=port, neo4j_user=neo4j_user,
                                neo4j_password=neo4j_password, neo4j_database=neo4j_database,
                                **(flags or {}))
    where = f"{settings.host}:{settings.port}; store: {settings.store_label}"
    configured, active = token_state(settings)
    if configured or settings.require_auth:
        # Every route but /healthz needs a token, so any address will do; require_auth
        # keeps this process from ever serving open, even if the store is wiped under it.
        settings = settings.model_copy(update={"require_auth": True})
        console.print(f"auth: {active} active token{'' if active == 1 else 's'}; "
                      f"listening on {where}")
        if not active:
            console.print("[yellow]no active token: every request but /healthz is refused "
                          "until `lineagegraph token create`[/yellow]")
    elif not is_loopback(settings.host) and not allow_open_bind:
        console.print(f"[red]refusing to bind {settings.host}: no tokens are configured, "
                      "so the server is open and may only listen on loopback (create one: "
                      "lineagegraph token create NAME --scopes read)[/red]")
        raise typer.Exit(2)
    else:
        console.print(f"[yellow]open mode[/yellow]: no tokens configured, every request "
                      f"is 'anonymous' with every scope; listening on {where}")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_config=_log_config())


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with the service's own INFO lines (the warm-up's) beside it."""
    import logging
    import re

    from uvicorn.config import LOGGING_CONFIG
    from uvicorn.logging import DefaultFormatter

    from .request_ids import tag_log_records

    class OneLine(DefaultFormatter):
        """A record's message on one line, the request ID at its end (the driver's hold
        Neo4j's multi-line error texts). A traceback logged with it, an unexpected
        error's, still follows it."""

        def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
            return re.sub(r"\s*\n\s*", " ", super().formatMessage(record))

    tag_log_records()  # the formats below name its attributes
    config = copy.deepcopy(LOGGING_CONFIG)
    # Each line logged in a request names its ID (api/request_ids.py), as the access
    # log's line does: what a caller was answered can be found.
    config["formatters"]["default"].update(
        {"()": OneLine, "fmt": "%(levelprefix)s %(message)s%(request_tag)s"})
    config["formatters"]["access"]["fmt"] += "%(request_tag)s"
    # strawberry logs the errors it masks from callers (the rest propagate to nothing).
    for name in ("lineagegraph", "strawberry"):
        config["loggers"][name] = {"handlers": ["default"], "level": "INFO",
                                   "propagate": False}
    # The Neo4j driver's warnings (a transaction it retries, a connection gone), named as
    # its: without a handler, Python printed their bare text, no level and no request ID.
    config["formatters"]["neo4j"] = {
        "()": OneLine, "fmt": "%(levelprefix)s %(name)s: %(message)s%(request_tag)s",
        "use_colors": None}
    config["handlers"]["neo4j"] = {**config["handlers"]["default"], "formatter": "neo4j"}
    config["loggers"]["neo4j"] = {"handlers": ["neo4j"], "level": "WARNING",
                                  "propagate": False}
    return config


def token_state(settings: Settings) -> tuple[bool, int]:
    """(a token was ever created, how many are active) in the configured store."""
    store = settings.open_store()
    try:
        tokens = list_tokens(store)
    finally:
        store.close()
    return bool(tokens), sum(token.active and not token.refused for token in tokens)


# The package's own copies (the repository's schema/ in an editable install), wherever
# the command runs from.
_SCHEMA_DIR = Path(lineagegraph.schema.__file__).resolve().parent


@app.command("export-schema")
def export_schema(
    output: Annotated[Path, typer.Option(help="where to write the SDL")] = (
        _SCHEMA_DIR / "schema.graphql"),
    docs: Annotated[Path, typer.Option(help="where to write the schema reference")] = (
        _SCHEMA_DIR / "SCHEMA.md"),
) -> None:
    """Write the GraphQL SDL clients build against and the schema reference, both derived
    from the declarations in schema/kinds.py."""
    from lineagegraph.schema.docs import schema_markdown

    from .graphql_schema import schema_sdl

    # The settings as every command reads them: a bad LINEAGEGRAPH_* value is a usage error.
    sdl = schema_sdl(Settings.for_cli())
    for path, text in ((output, sdl), (docs, schema_markdown())):
        try:
            path.write_text(text)
        except OSError as error:  # no such directory, not writable: one line, not a traceback
            cannot_write(path, error.strerror or str(error))
    console.print(f"wrote {output} and {docs}")


def main() -> None:
    """The ``lineagegraph`` command: a store that cannot be opened, or that fails while the
    command runs (Neo4j stopped mid-load), is one line naming the setting and exit 1, not
    a driver's traceback."""
    try:
        app()
    except StoreUnreachable as error:
        console.print(f"[red]{escape(str(error))}[/red]", soft_wrap=True)  # one line, unbroken
        raise SystemExit(1) from None
    except StoreUpgraded as error:  # not back by running it again: said as it is
        console.print(f"[red]{escape(str(error))}[/red]", soft_wrap=True)
        raise SystemExit(1) from None
    except StoreUnavailable as error:
        setting = Settings.env_name("neo4j_uri" if error.store == "neo4j" else "db")
        detail = f": {error.detail}" if error.detail not in str(error) else ""
        console.print(f"[red]the store failed: {escape(f'{error} ({setting}){detail}')}; "
                      "run the command again once it is back (re-sending changes nothing "
                      "written)[/red]", soft_wrap=True)
        raise SystemExit(1) from None
    except (MetadataMoved, StageMoved) as error:  # other writers won every try
        console.print(f"[red]{escape(str(error))}: other writers kept landing first; run the "
                      "command again (re-sending changes nothing written)[/red]",
                      soft_wrap=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
