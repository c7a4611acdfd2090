"""Bad input becomes a 4xx with a JSON body that says what and where — never a 500."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lineagegraph.ingest.batch import IngestError
from lineagegraph.schema import InvalidId, SchemaError


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IngestError)
    async def ingest_error(_: Request, error: IngestError) -> JSONResponse:
        return JSONResponse(
            {"error": "invalid input; nothing was written",
             "problems": [p.to_json() for p in error.problems]},
            status_code=400,
        )

    @app.exception_handler(SchemaError)
    async def schema_error(_: Request, error: SchemaError) -> JSONResponse:
        return JSONResponse(
            {"error": "the input breaks the graph schema; nothing was written",
             "problems": [{"field": error.where, "message": error.message}]},
            status_code=422,
        )

    @app.exception_handler(InvalidId)
    async def invalid_id(_: Request, error: InvalidId) -> JSONResponse:
        return JSONResponse({"error": "invalid ID", "problems": [{"message": str(error)}]},
                            status_code=400)
