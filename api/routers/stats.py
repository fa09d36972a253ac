"""Per-ward statistics for choropleth maps (the IOC wall map calls ``/stats/{layer}/by-ward``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from api.deps import CatalogDep, PrincipalDep
from api.routers.query import QuerySettingsDep
from ioc.media import GEOJSON
from ioc.query import stats

router = APIRouter(tags=["statistics"])

Number = {"type": "number"}
# The answer as the choropleth pages read it (checked by the schemathesis test).
CHOROPLETH = {
    "type": "object",
    "required": ["type", "features", "breaks", "legend", "total"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "total": Number,
        "breaks": {"type": "array", "items": Number},
        "legend": {
            "type": "array",
            "items": {"type": "object", "required": ["class", "min", "max"]},
        },
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "geometry", "properties"],
                "properties": {
                    "type": {"const": "Feature"},
                    "properties": {
                        "type": "object",
                        "required": ["value", "rank", "class"],
                        "properties": {
                            "value": Number,
                            "rank": {"type": "integer", "minimum": 1},
                            "class": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
        },
    },
}


@router.get(
    "/stats/{layer}/by-ward",
    summary="Per-ward statistic of a layer (choropleth)",
    response_class=Response,
    responses={
        200: {
            "content": {GEOJSON: {"schema": CHOROPLETH}},
            "description": (
                "Every ward (simplified geometry) with `value`, `rank` (1 = largest) and `class` "
                "(quintile, 0-based); `breaks`, `legend`, `total` at collection level"
            ),
        },
        400: {"description": "Malformed parameter"},
        404: {"description": "Unknown layer, or not readable by the caller"},
        503: {"description": "Timed out"},
    },
)
async def by_ward(
    request: Request,
    principal: PrincipalDep,
    catalog: CatalogDep,
    settings: QuerySettingsDep,
    layer: Annotated[str, Path(description="Layer id")],
    measure: Annotated[
        Literal["count", "sum", "avg"],
        Query(description="count of features, or sum / mean of `attribute`"),
    ] = "count",
    attribute: Annotated[
        str | None, Query(max_length=63, description="Numeric attribute (sum, avg)")
    ] = None,
    start: Annotated[
        str | None,
        Query(
            alias="from",
            description=(
                "Start (inclusive) on the layer's time attribute, RFC 3339 or a date (city time)"
            ),
        ),
    ] = None,
    end: Annotated[str | None, Query(alias="to", description="End (exclusive)")] = None,
    filter_: Annotated[str | None, Query(alias="filter", description="CQL2 filter")] = None,
    filter_lang: Annotated[
        Literal["cql2-text", "cql2-json"] | None, Query(alias="filter-lang")
    ] = None,
    wards: Annotated[
        Literal["current", "2019"],
        Query(description="2025 wards (`wards`) or pre-2025 wards (`wards_2019`)"),
    ] = "current",
) -> Response:
    """A choropleth-ready FeatureCollection: the same number for every ward as a direct
    `ST_Intersects` count, with ranks and quantile classes for the legend."""
    body, public = await stats.by_ward(
        request.app.state.read_pool([layer]),  # a replica (docs/scaling.md)
        catalog,
        principal,
        layer,
        measure=measure,
        attribute=attribute,
        start=start,
        end=end,
        filter=filter_,
        filter_lang=filter_lang,
        wards=wards,
        settings=settings,
    )
    cache = "public, max-age=60" if public else "private, no-store"
    return Response(
        body, media_type=GEOJSON, headers={"Cache-Control": cache, "Vary": "Authorization"}
    )
