"""FastAPI dependencies: the store, settings and the acting principal, injected per request
instead of read from globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lineagegraph.graph.store import GraphStore

from .settings import Settings

# With no token configured (open mode), writes are recorded under this actor.
OPEN_MODE_ACTOR = "anonymous"


def get_store(request: Request) -> GraphStore:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_actor(request: Request) -> str:
    """The authenticated token's name (api/auth.py sets the principal), the audit actor."""
    principal = getattr(request.state, "principal", None)
    return principal.name if principal is not None else OPEN_MODE_ACTOR


StoreDep = Annotated[GraphStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ActorDep = Annotated[str, Depends(get_actor)]
