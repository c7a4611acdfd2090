"""``lineagegraph token …``: create, list and revoke scoped bearer tokens (api/auth.py).

``create`` prints the secret once, alone on stdout (``SECRET=$(lineagegraph token create
ci --scopes write)``); everything else goes to stderr. The store keeps only its hash.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .auth import SCOPES, TokenError, create_token, list_tokens, revoke_token
from .cli_ingest import DbPath, NeoUri, open_store

token_app = typer.Typer(help="Scoped bearer tokens (admin ⊇ write ⊇ read): create, list, "
                        "revoke.", no_args_is_help=True)
console = Console(stderr=True)
CLI_ACTOR = "cli"


def _fail(error: TokenError) -> typer.Exit:
    console.print(f"[red]{escape(str(error))}[/red]")
    return typer.Exit(1)


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="who the token is for; the audit log's actor")],
    scopes: Annotated[str, typer.Option(
        help=f"comma-separated, of {', '.join(SCOPES)}; admin ⊇ write ⊇ read")] = "read",
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """Create a token and print its secret once: it cannot be shown again."""
    store = open_store(db, neo4j_uri)
    try:
        info, secret = create_token(store, name, scopes, actor=CLI_ACTOR)
    except TokenError as error:
        raise _fail(error) from None
    finally:
        store.close()
    console.print(f"created token [bold]{escape(info.name)}[/bold] (id {info.token_id}, "
                  f"scopes {', '.join(info.scopes)}). The secret below is shown once; "
                  "send it as 'Authorization: Bearer <secret>'.")
    typer.echo(secret)


@token_app.command("list")
def list_(db: DbPath = None, neo4j_uri: NeoUri = None) -> None:
    """Every token ever created, revoked ones included (never a secret or hash)."""
    store = open_store(db, neo4j_uri)
    try:
        tokens = list_tokens(store)
    finally:
        store.close()
    table = Table(title="tokens")
    for column in ("name", "id", "scopes", "created", "revoked"):
        table.add_column(column)
    for token in tokens:
        # A reserved name an older version allowed: active, but refused (api/auth.py).
        revoked = ("refused: reserved name" if token.refused
                   else f"{token.revoked_at:%Y-%m-%d %H:%M:%S}Z" if token.revoked_at else "")
        table.add_row(escape(token.name), token.token_id, ",".join(token.scopes),
                      f"{token.created_at:%Y-%m-%d %H:%M:%S}Z", revoked)
    Console().print(table)


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="the token to revoke")],
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """Revoke a token: this process at once, a running server within
    LINEAGEGRAPH_TOKEN_CACHE_S seconds (default 5)."""
    store = open_store(db, neo4j_uri)
    try:
        revoked = revoke_token(store, name, actor=CLI_ACTOR)
    except TokenError as error:
        raise _fail(error) from None
    finally:
        store.close()
    ids = ", ".join(t.token_id for t in revoked)
    console.print(f"revoked token [bold]{escape(name)}[/bold] (id {ids})")
