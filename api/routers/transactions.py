"""OGC API – Features Part 4: create, replace, update and delete single features.

Thin handlers: each calls ``layers.items_write.write`` (one transaction, validated like an
upload, versioned and audited) and then the one catalog reload, which tells the tile caches.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import WithJsonSchema

from api.deps import LayerDep, PrincipalDep, WriteLimit
from api.openapi import Responses
from api.urls import base_url
from ioc.catalog.access import Principal
from ioc.catalog.layers import Layer
from layers import feed, items_write
from layers.items_write import Operation

# Every write here counts against the key's write rate (api/ratelimit.py): 429 past it.
router = APIRouter(tags=["features (write)"], dependencies=[WriteLimit])

FEATURE_DOC = (
    "A GeoJSON Feature. Properties are the layer's attributes (an unknown one is a 422), "
    "converted as a publish converts them; the geometry must be of the layer's type, valid, and "
    "inside the city. Coordinates are CRS84 unless `Content-Crs` names another CRS of the "
    "collection (EPSG:4326 is lat/lon; VN-2000 EPSG:9210 gets the official datum shift)."
)
WRITE_RESPONSES: Responses = {
    403: {"description": "The layer belongs to another department"},
    412: {"description": "If-Match names a state that is no longer current"},
    429: {"description": "The API key writes faster than IOC_WRITE_RATE_PER_SECOND; Retry-After"},
    422: {"description": "A property or the geometry is refused; the answer says which"},
}
GeoJSONBody = Annotated[
    dict[str, Any],
    Body(media_type="application/geo+json", description=FEATURE_DOC),
]
FEED_DOC = (
    " A feed batch instead — `application/geo+json-seq` (RFC 8142) or `application/x-ndjson`,"
    " one Feature a line — is upserted by the layer's `id_attribute` in one transaction and"
    " answered 200 with a report (`received`, `applied`, `created`, `updated`, `failed` lines"
    " with their number and reason, `version`); with `atomic=true` any bad line refuses the"
    " whole batch (422 with the report)."
)
FEED_BODY = {"schema": {"type": "string", "description": "One GeoJSON Feature a line"}}
# The items POST takes a Feature (parsed by FastAPI) or a feed's raw lines (bytes: FastAPI
# hands non-JSON bodies over unparsed); documented as the Feature, the feeds beside it.
CreateBody = Annotated[
    dict[str, Any] | bytes,
    WithJsonSchema({"type": "object", "description": "A GeoJSON Feature or FeatureCollection"}),
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
    description="A Feature, or a FeatureCollection written all or nothing. "
    + FEATURE_DOC
    + FEED_DOC,
    responses={
        **WRITE_RESPONSES,
        200: {"description": "A feed batch was ingested; the report says what was applied"},
        201: {"description": "Created; `Location` names the first"},
        413: {"description": "The body is larger than IOC_REQUEST_BODY_MAX_BYTES"},
    },
    openapi_extra={"requestBody": {"content": {media: FEED_BODY for media in feed.MEDIA_TYPES}}},
)
async def create_items(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    body: CreateBody,
    content_crs: ContentCrs = None,
    atomic: Annotated[
        bool, Query(description="Feed batches only: refuse the whole batch if a line is bad")
    ] = False,
):
    """201 with `Location` and the new ids; a feed batch: 200 with its report."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in feed.MEDIA_TYPES:
        return await _ingest(request, layer, principal, body, media_type, atomic, content_crs)
    result = await _write(
        request, layer, "create", principal=principal, body=body, content_crs=content_crs
    )
    href = f"{base_url(request)}/collections/{layer.id}/items"
    return JSONResponse(
        {"ids": result.ids, "version": result.version},
        status_code=201,
        headers={"Location": f"{href}/{quote(result.ids[0], safe='')}"},
    )


async def _ingest(
    request: Request,
    layer: Layer,
    principal: Principal,
    body: dict[str, Any] | bytes,
    media_type: str,
    atomic: bool,
    content_crs: str | None,
) -> JSONResponse:
    """A feed batch: one transaction, then the one catalog reload."""
    state = request.app.state
    raw = body if isinstance(body, bytes) else b""
    report = await run_in_threadpool(
        feed.ingest,
        state.settings,
        layer,
        principal,
        raw,
        media_type=media_type,
        atomic=atomic,
        content_crs=content_crs,
    )
    if report.applied:
        await state.reload_catalog({layer.id})
    return JSONResponse(report.document())


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
