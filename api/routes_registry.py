"""Registry manifests, inference outcomes and the dead-letter store (filled in by the ingest
work)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["ingest"])
