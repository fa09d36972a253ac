"""OGC API – Features Part 4: create, replace, update and delete single features.

Thin handlers: each calls ``layers.items_write.write`` (one transaction, validated like an
upload, versioned and audited) and then the one catalog reload, which tells the tile caches.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Header, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.deps import LayerDep, PrincipalDep
from api.openapi import Responses
from api.urls import base_url
from ioc.catalog.access import Principal
from ioc.catalog.layers import Layer
from layers import items_write
from layers.items_write import Operation

router = APIRouter(tags=["features (write)"])

FEATURE_DOC = (
    "A GeoJSON Feature. Properties are the layer's attributes (an unknown one is a 422), "
    "converted as a publish converts them; the geometry must be of the layer's type, valid, and "
    "inside the city. Coordinates are CRS84 unless `Content-Crs` names another CRS of the "
    "collection (EPSG:4326 is lat/lon; VN-2000 EPSG:9210 gets the official datum shift)."
)
WRITE_RESPONSES: Responses = {
    403: {"description": "The layer belongs to another department"},
    412: {"description": "If-Match names a state that is no longer current"},
    422: {"description": "A property or the geometry is refused; the answer says which"},
}
GeoJSONBody = Annotated[
    dict[str, Any],
    Body(media_type="application/geo+json", description=FEATURE_DOC),
]
ContentCrs = Annotated[
    str | None, Header(alias="Content-Crs", description="CRS URI of the body's coordinates")
]
FeatureIdPath = Annotated[str, Path(alias="featureId", description="Feature id")]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="The ETag of the feature as last read")
]


async def _write(
    request: Request, layer: Layer, op: Operation, **kwargs: Any
) -> items_write.WriteResult:
    state = request.app.state
    result = await run_in_threadpool(
        items_write.write, state.settings, layer, kwargs.pop("principal"), op, **kwargs
    )
    await state.reload_catalog({layer.id})
    return result


async def _change(
    request: Request,
    layer: Layer,
    principal: Principal,
    op: Operation,
    feature_id: str,
    body: Any,
    content_crs: str | None,
    if_match: str | None,
) -> Response:
    """PUT, PATCH or DELETE of one feature: 204."""
    await _write(
        request,
        layer,
        op,
        principal=principal,
        body=body,
        feature_id=feature_id,
        content_crs=content_crs,
        if_match=if_match,
    )
    return Response(status_code=204)


@router.post(
    "/collections/{collectionId}/items",
    status_code=201,
    summary="Add features",
    description="A Feature, or a FeatureCollection written all or nothing. " + FEATURE_DOC,
    responses={**WRITE_RESPONSES, 201: {"description": "Created; `Location` names the first"}},
)
async def create_items(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    body: GeoJSONBody,
    content_crs: ContentCrs = None,
):
    """201 with `Location` and the new ids."""
    result = await _write(
        request, layer, "create", principal=principal, body=body, content_crs=content_crs
    )
    href = f"{base_url(request)}/collections/{layer.id}/items"
    return JSONResponse(
        {"ids": result.ids, "version": result.version},
        status_code=201,
        headers={"Location": f"{href}/{quote(result.ids[0], safe='')}"},
    )


@router.put(
    "/collections/{collectionId}/items/{featureId:path}",
    status_code=204,
    summary="Replace a feature",
    description=FEATURE_DOC,
    responses=WRITE_RESPONSES,
)
async def replace_item(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    feature_id: FeatureIdPath,
    body: GeoJSONBody,
    content_crs: ContentCrs = None,
    if_match: IfMatch = None,
):
    """204; absent properties become NULL."""
    return await _change(
        request, layer, principal, "replace", feature_id, body, content_crs, if_match
    )


@router.patch(
    "/collections/{collectionId}/items/{featureId:path}",
    status_code=204,
    summary="Update a feature (merge)",
    description="JSON merge patch of `properties` (null sets NULL) and/or a new `geometry`. "
    + FEATURE_DOC,
    responses=WRITE_RESPONSES,
)
async def update_item(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    feature_id: FeatureIdPath,
    body: Annotated[
        dict[str, Any],
        Body(media_type="application/merge-patch+json", description="Properties and/or geometry"),
    ],
    content_crs: ContentCrs = None,
    if_match: IfMatch = None,
):
    """204."""
    return await _change(
        request, layer, principal, "update", feature_id, body, content_crs, if_match
    )


@router.delete(
    "/collections/{collectionId}/items/{featureId:path}",
    status_code=204,
    summary="Delete a feature",
    responses=WRITE_RESPONSES,
)
async def delete_item(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    feature_id: FeatureIdPath,
    if_match: IfMatch = None,
):
    """204."""
    return await _change(request, layer, principal, "delete", feature_id, None, None, if_match)
