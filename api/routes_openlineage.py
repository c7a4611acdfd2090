"""OpenLineage ingest: Marquez-compatible routes (filled in by the ingest work)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["ingest"])
