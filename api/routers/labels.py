"""Label points of a layer (``/collections/{id}/labels``): the place and street names the map
pages draw, each with the zoom from which it fits (ioc.maps.labels)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.deps import LayerDep, PoolDep, PrincipalDep
from api.routers.collections import cache_headers, reject_unknown
from ioc.features.crs import CRS84, parse_bbox
from ioc.maps import labels

router = APIRouter(tags=["maps"])

PARAMETERS = frozenset({"property", "zoom", "bbox", "limit"})


@router.get(
    "/collections/{collectionId}/labels",
    summary="Label points of a layer's names (map labels)",
    responses={
        200: {
            "description": "Labels shown at `zoom` in `bbox`, largest first: `columns` names "
            "the fields of each row of `labels` (text, lon, lat, the zoom from which it fits, "
            "size in Web Mercator metres, rotation in degrees clockwise for a line)"
        },
        400: {"description": "Malformed parameter, unknown property, or a layer too big to label"},
        404: {"description": "Unknown layer, or not readable by the caller"},
    },
)
async def layer_labels(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    pool: PoolDep,
    property_: Annotated[
        str, Query(alias="property", max_length=63, description="The attribute holding the name")
    ],
    zoom: Annotated[
        float, Query(ge=0, le=labels.MAX_ZOOM, description="Labels that fit at this zoom")
    ],
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (CRS84)")] = None,
    limit: Annotated[
        int, Query(ge=1, le=labels.MAX_LIMIT, description="At most this many, largest first")
    ] = labels.DEFAULT_LIMIT,
) -> Any:
    """A polygon's label sits in its largest inscribed circle, a line's along it (merged by
    name, repeated along long streets), a point's on it; computed once per layer version."""
    reject_unknown(request, PARAMETERS)
    prop = labels.label_property(layer, property_)
    boxes = [b.values for b in parse_bbox(bbox, CRS84)] if bbox is not None else []
    found = await labels.get_labels(pool, layer, prop)
    doc = labels.labels_document(found, zoom, boxes, limit)
    return JSONResponse(doc, headers=cache_headers(principal, layer))
