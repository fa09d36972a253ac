"""A feature's past: ``GET /collections/{id}/items/{featureId}/history`` (layers that keep
history; the layer's own access rules). Registered before the features router, whose
``{featureId:path}`` would otherwise take ``…/history`` as part of an id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import LayerDep, PrincipalDep
from api.routers.collections import (
    LIMIT_DOC,
    cache_headers,
    feature_collection,
    page_links,
    reject_unknown,
)
from ioc import media
from ioc.errors import InvalidParameter
from ioc.features import history, items
from ioc.features.crs import CRS84, parse_crs
from ioc.features.items import ItemsQuery

router = APIRouter(tags=["features"])
PARAMETERS = frozenset({"datetime", "limit", "offset", "crs", "f"})


async def _chunks(features: list[bytes]):
    yield b",".join(features)


@router.get(
    "/collections/{collectionId}/items/{featureId:path}/history",
    summary="The states of one feature over time",
    description="Every state the feature had, oldest first, each with `valid_from` and "
    "`valid_to` (null while current) in its properties; `datetime` keeps the states that "
    "overlap an instant or interval. Paged like items. 404 on a layer whose manifest keeps "
    "no history.",
    responses={200: {"content": {media.GEOJSON: {}}}},
)
async def get_item_history(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    feature_id: Annotated[str, Path(alias="featureId", description="Feature id")],
    datetime_: Annotated[
        str | None,
        Query(alias="datetime", description="RFC 3339 instant or interval `start/end`"),
    ] = None,
    limit: Annotated[int, Query(ge=1, description=LIMIT_DOC)] = items.DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=2**53, description="States to skip")] = 0,
    crs: Annotated[str | None, Query(description="CRS URI of the response")] = None,
    f: Annotated[str | None, Query(description="`json` (GeoJSON, the only format)")] = None,
):
    """A FeatureCollection of the feature's states (404 when it never existed)."""
    reject_unknown(request, PARAMETERS)
    if f not in (None, "json", "geojson"):
        raise InvalidParameter("'f' of a feature's history can only be json.", parameter="f")
    q = ItemsQuery(
        interval=items.parse_datetime(datetime_) if datetime_ is not None else None,
        limit=min(limit, items.MAX_LIMIT),
        offset=offset,
        crs=parse_crs(crs, parameter="crs", storage_srid=layer.srid, default=CRS84),
    )
    page, features = await history.feature_history(
        request.app.state.pool, layer, feature_id, q.interval, q.limit or limit, q.offset, q.crs
    )
    body = feature_collection(_chunks(features), page, lambda p: page_links(request, layer, q, p))
    headers = {**cache_headers(principal, layer), "Content-Crs": f"<{q.crs.uri}>"}
    return StreamingResponse(body, media_type=media.GEOJSON, headers=headers)
