"""Grid aggregates of a layer (``/collections/{id}/grid``): feature counts per Web Mercator cell,
what the wall's heat map of 1022 reports is drawn from (ioc.features.grid)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.deps import LayerDep, PrincipalDep
from api.routers.collections import cache_headers, reject_unknown
from ioc.features import cql2, grid, items
from ioc.features.crs import CRS84, parse_bbox, parse_crs
from ioc.features.items import ItemsQuery

router = APIRouter(tags=["features"])

PARAMETERS = frozenset(
    {"level", "bbox", "datetime", "filter", "filter-lang", "filter-crs", "weight"}
)


@router.get(
    "/collections/{collectionId}/grid",
    summary="Feature counts per grid cell (heat maps)",
    responses={
        200: {
            "description": "Non-empty cells: `columns` names the fields of each row of `cells` "
            "(tile x, y at `level`, count, mean lon/lat of the cell's features[, sum])"
        },
        400: {"description": "Malformed parameter, or too many cells for the bbox"},
        404: {"description": "Unknown layer, or not readable by the caller"},
    },
)
async def grid_cells(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    level: Annotated[
        int,
        Query(ge=0, le=grid.MAX_LEVEL, description="Cells are the tiles of this zoom level"),
    ],
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (CRS84)")] = None,
    datetime_: Annotated[
        str | None, Query(alias="datetime", description="RFC 3339 instant or interval")
    ] = None,
    filter_: Annotated[str | None, Query(alias="filter", description="CQL2 filter")] = None,
    filter_lang: Annotated[
        str | None, Query(alias="filter-lang", description="cql2-text (default) or cql2-json")
    ] = None,
    filter_crs: Annotated[
        str | None, Query(alias="filter-crs", description="CRS URI of geometries in `filter`")
    ] = None,
    weight: Annotated[
        str | None, Query(max_length=63, description="Numeric property summed per cell")
    ] = None,
) -> Any:
    """Every feature matching the filters counted once, in the cell of its point: the sum of
    the cells' counts is what `/items` counts with the same bbox, datetime and filter."""
    reject_unknown(request, PARAMETERS)
    q = ItemsQuery(
        bboxes=tuple(parse_bbox(bbox, CRS84)) if bbox is not None else (),
        interval=items.parse_datetime(datetime_) if datetime_ is not None else None,
        filter=cql2.parse_filter(filter_, filter_lang) if filter_ is not None else None,
        filter_crs=parse_crs(filter_crs, parameter="filter-crs", storage_srid=layer.srid),
        limit=None,
    )
    pool = request.app.state.read_pool([layer.id])  # a replica (docs/scaling.md)
    answer = await grid.count_cells(pool, layer, q, level, weight)
    return JSONResponse(answer.document(), headers=cache_headers(principal, layer))
