"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import PoolDep
from ioc.db import migrations

router = APIRouter(tags=["service"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    """Answers as long as the process serves requests; does not touch the database."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database is reachable and its schema is current",
    responses={503: {"description": "Not ready: database down or migrations not current"}},
)
async def readyz(pool: PoolDep) -> JSONResponse:
    """200 when PostGIS answers and every migration of this version is applied, else 503."""
    try:
        state = await asyncio.wait_for(migrations.state_async(pool), timeout=3)
    except Exception as exc:  # any failure to reach the database means "not ready"
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "detail": type(exc).__name__},
            status_code=503,
        )
    body = {
        "status": "ok" if state.current else "unavailable",
        "database": "ok",
        "schema_version": state.version,
        "pending": [m.version for m in state.pending],
        "ahead": state.ahead,
    }
    return JSONResponse(body, status_code=200 if state.current else 503)
