"""``GET /metrics``: the process's Prometheus metrics (api/metrics.py), for admin and
operator keys only."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import PrincipalDep
from ioc.errors import Forbidden, NotAuthenticated

router = APIRouter(tags=["service"])
READERS = ("admin", "operator")


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process (admin and operator keys)",
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}},
        401: {"description": "No API key"},
        403: {"description": "A key of another role"},
    },
)
async def metrics(request: Request, principal: PrincipalDep) -> Response:
    """Requests and latency by route family, tile cache hits, database pools, replica lag,
    change-event lag and ingest (docs/scaling.md 'Metrics'). Per process: scrape each."""
    if not principal.authenticated:
        raise NotAuthenticated(
            "The metrics need an admin or operator API key (Authorization: Bearer KEY)."
        )
    if principal.role not in READERS:
        raise Forbidden(f"The metrics are for admin and operator keys, not {principal.role}.")
    body = generate_latest(request.app.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
