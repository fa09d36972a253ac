"""Departments publish their layers: create, replace/append data, versions, restore, delete."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Cookie, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.requests import ClientDisconnect

from api.deps import SESSION_COOKIE, CatalogDep, PrincipalDep, SettingsDep
from api.openapi import Responses
from api.routers.maps import _public_origin
from ioc.catalog.access import ANONYMOUS, Principal, can_write
from ioc.catalog.layers import Layer, get_layer_doc
from ioc.config import Settings
from ioc.errors import InvalidParameter, UploadTooLarge
from layers import publish_preview, publishing
from layers.inference import NewLayerFields
from layers.publish_staging import PublishOptions

router = APIRouter(prefix="/layers", tags=["publishing"])

# The publishing page (/publish) signs in with the map-session cookie. A cookie counts only on
# safe methods everywhere else; here it also counts on writes that carry this header from this
# server's own origin: a cross-site form cannot set a header, a cross-site script cannot send
# it without a CORS preflight, and SameSite=Strict keeps the cookie home anyway.
SESSION_WRITE_HEADER = "x-ioc-session"


async def get_publisher(
    request: Request,
    principal: PrincipalDep,
    session: Annotated[str | None, Cookie(alias=SESSION_COOKIE, include_in_schema=False)] = None,
) -> Principal:
    """The caller of a publishing request: the API key, else the page's session on a write
    that says so (see SESSION_WRITE_HEADER)."""
    if principal.authenticated or not session or request.method in ("GET", "HEAD"):
        return principal
    origin = request.headers.get("origin")
    own = (f"{request.url.scheme}://{request.url.netloc}", _public_origin(request))
    if request.headers.get(SESSION_WRITE_HEADER) != "1" or origin not in own:
        return principal
    state = request.app.state
    return await state.sessions.resolve(state.pool, session) or ANONYMOUS


PublisherDep = Annotated[Principal, Depends(get_publisher)]


async def get_publishing_layer(
    catalog: CatalogDep,
    principal: PublisherDep,
    collection_id: Annotated[str, PathParam(alias="collectionId", description="Layer id")],
) -> Layer:
    """The layer in the path as the publisher sees it (404 when unknown or not readable)."""
    return catalog.get(collection_id, principal)


LayerDep = Annotated[Layer, Depends(get_publishing_layer)]

UPLOAD_DOC = (
    "The request body is the file itself (GeoJSON, zipped Shapefile, GeoPackage, CSV with lon/lat "
    "or VN-2000 X/Y columns, KML), e.g. `curl -T wards.zip`. The CRS comes from the file (.prj, "
    "GeoPackage, GeoJSON = WGS 84) or `crs`; VN-2000 in its common forms gets the official datum "
    "shift. Nothing is published unless every feature is valid (or `partial=true`); the answer is "
    "a report of accepted, repaired and rejected features."
)


async def _receive(request: Request, max_bytes: int) -> Path:
    """Stream the body to a temporary file with a size limit (never all in memory)."""
    handle = tempfile.NamedTemporaryFile(prefix="ioc-upload-", delete=False)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise UploadTooLarge(
                    f"The upload exceeds the limit of {max_bytes:,} bytes.", parameter="file"
                )
            handle.write(chunk)
    except (ClientDisconnect, UploadTooLarge):
        handle.close()
        os.unlink(handle.name)
        raise
    handle.close()
    return Path(handle.name)


async def _upload(
    request: Request,
    layer: Layer,
    principal: Principal,
    settings: Settings,
    mode: Literal["replace", "append"],
    dry_run: bool,
    **options: Any,
) -> dict[str, Any]:
    publishing.check_can_write(principal, layer)
    path = await _receive(request, settings.publish.upload_max_bytes)
    try:
        if dry_run:
            return await run_in_threadpool(
                publish_preview.dry_run,
                settings,
                layer,
                path,
                principal,
                _options(mode, options),
                filename=options["filename"] or path.name,
            )
        report = await run_in_threadpool(
            publishing.publish_upload, settings, layer, path, principal, mode=mode, **options
        )
    finally:
        path.unlink(missing_ok=True)
    await request.app.state.reload_catalog({layer.id})
    return report.as_dict()


def _options(mode: Literal["replace", "append"], options: dict[str, Any]) -> PublishOptions:
    return PublishOptions(
        mode=mode,
        crs=options.get("crs"),
        format=options.get("fmt"),
        invalid=options.get("invalid", "reject"),
        partial=bool(options.get("partial")),
        ignore_unknown=bool(options.get("ignore_unknown")),
    )


Filename = Annotated[str | None, Query(description="Original file name (tells the format).")]
Fmt = Annotated[
    Literal["geojson", "shapefile", "gpkg", "csv", "kml"] | None,
    Query(alias="format", description="Format, when the file name does not say."),
]
Crs = Annotated[str | None, Query(description="CRS of the file, e.g. EPSG:9210, when it has none.")]
Invalid = Annotated[
    Literal["reject", "repair"], Query(description="Invalid geometries: reject or repair.")
]
Partial = Annotated[
    bool, Query(description="Publish the valid features even if some are rejected.")
]
IgnoreUnknown = Annotated[bool, Query(description="Ignore fields the layer does not know.")]
DryRun = Annotated[
    bool,
    Query(
        description="Validate and compare with the live layer only: the report, what would "
        "change (added, removed, modified) and a preview token to publish it later; nothing "
        "is written to the layer."
    ),
]


@dataclass
class UploadParams:
    """How to read and validate an upload (query parameters of PUT and POST …/data)."""

    filename: Filename = None
    fmt: Fmt = None
    crs: Crs = None
    invalid: Invalid = "reject"
    partial: Partial = False
    ignore_unknown: IgnoreUnknown = False


UploadDep = Annotated[UploadParams, Depends()]
RESPONSES: Responses = {
    413: {"description": "Too large"},
    422: {"description": "Rejected, with report"},
}


@router.put(
    "/{collectionId}/data",
    summary="Replace a layer's data",
    description=UPLOAD_DOC,
    responses=RESPONSES,
)
async def replace_data(
    request: Request,
    layer: LayerDep,
    principal: PublisherDep,
    settings: SettingsDep,
    params: UploadDep,
    dry_run: DryRun = False,
) -> dict[str, Any]:
    """Validate the uploaded file and make it the layer's data in one transaction."""
    return await _upload(request, layer, principal, settings, "replace", dry_run, **asdict(params))


@router.post(
    "/{collectionId}/data",
    summary="Append to a layer's data",
    description=UPLOAD_DOC,
    responses=RESPONSES,
)
async def append_data(
    request: Request,
    layer: LayerDep,
    principal: PublisherDep,
    settings: SettingsDep,
    params: UploadDep,
    dry_run: DryRun = False,
) -> dict[str, Any]:
    """Validate the uploaded file and add its features to the layer in one transaction."""
    return await _upload(request, layer, principal, settings, "append", dry_run, **asdict(params))


@router.get("/{collectionId}/versions", summary="A layer's data versions")
async def versions(
    layer: LayerDep, principal: PublisherDep, settings: SettingsDep
) -> dict[str, Any]:
    """Past versions, newest first; `restorable` ones can be restored."""
    rows = await run_in_threadpool(publishing.versions, settings, layer, principal)
    return {"layer": layer.id, "current": layer.version, "versions": rows}


@router.post("/{collectionId}/versions/{version}/restore", summary="Restore an earlier version")
async def restore(
    request: Request, layer: LayerDep, principal: PublisherDep, settings: SettingsDep, version: int
) -> dict[str, Any]:
    """Make a kept version the live data again; recorded as a new version."""
    report = await run_in_threadpool(publishing.restore, settings, layer, version, principal)
    await request.app.state.reload_catalog({layer.id})
    return report.as_dict()


class NewLayerParams(BaseModel):
    """What a person confirms to create a layer from a file (the rest is read from it)."""

    title_vi: str | None = None
    title_en: str | None = None
    domain: str | None = None
    access: Literal["public", "internal", "restricted"] | None = None
    id_attribute: str | None = None
    time_attribute: str | None = None
    id: str | None = None
    department: str | None = None

    def fields(self) -> NewLayerFields:
        data = self.model_dump()
        return NewLayerFields(layer_id=data.pop("id"), **data)


NewLayerQuery = Annotated[NewLayerParams, Query()]
CREATE_DOC = (
    "Two bodies. **A manifest** (`Content-Type: application/json`, the document of "
    "layers/catalog/*.yaml). **A file** (any other type, as for uploads): ioc reads the "
    "geometry type, CRS (VN-2000 included), attributes and types, extent and count from it and "
    "creates the layer with the file as its data; only `title_vi`, `title_en`, `domain`, "
    "`access`, `id_attribute` and `time_attribute` are asked (the id comes from the English "
    "title unless `id` is given; admins name the `department`). With `dry_run=true` nothing is "
    "created: the answer is the inference, the report and a preview token, and the fields may "
    "be given when the preview is published."
)
MANIFEST_LIMIT = 1 << 20


@router.post(
    "",
    status_code=201,
    summary="Create a layer from a manifest or from a file",
    description=CREATE_DOC,
    responses={200: {"description": "Dry run: inference, report, preview"}, **RESPONSES},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def create(
    request: Request,
    principal: PublisherDep,
    settings: SettingsDep,
    params: UploadDep,
    new: NewLayerQuery,
    dry_run: DryRun = False,
):
    """A publisher creates layers in its own department; admins anywhere."""
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        manifest = await _manifest_body(request)
        layer_id = await run_in_threadpool(publishing.create, settings, manifest, principal)
        catalog = await request.app.state.reload_catalog({layer_id})
        return get_layer_doc(catalog.get(layer_id, principal))
    path = await _receive(request, settings.publish.upload_max_bytes)
    options = _options("replace", asdict(params))
    try:
        doc = await run_in_threadpool(
            publish_preview.create_from_file,
            settings,
            path,
            principal,
            new.fields(),
            options,
            filename=params.filename or path.name,
            dry_run=dry_run,
        )
    finally:
        path.unlink(missing_ok=True)
    if dry_run:
        return JSONResponse(doc, status_code=200)
    catalog = await request.app.state.reload_catalog({doc["layer"]})
    layer_doc = get_layer_doc(catalog.get(doc["layer"], principal))
    return {**layer_doc, "report": doc}


async def _manifest_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MANIFEST_LIMIT:
        raise UploadTooLarge(f"A manifest is at most {MANIFEST_LIMIT:,} bytes.")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidParameter("The manifest is not valid JSON.", parameter="manifest") from exc
    if not isinstance(document, dict):
        raise InvalidParameter("The manifest must be a JSON object.", parameter="manifest")
    return document


@router.get("", summary="Layers the caller may publish to")
async def writable_layers(catalog: CatalogDep, principal: PublisherDep) -> dict[str, Any]:
    """The caller's department's layers (every layer for an admin) with their last update,
    version and feature count: what the publishing page lists."""
    layers = [la for la in catalog.visible(principal) if can_write(principal, la)]
    return {
        "role": principal.role,
        "department": principal.department,
        "layers": [
            {
                "id": la.id,
                "title": {"vi": la.title_vi, "en": la.title_en},
                "domain": la.domain,
                "access": la.access,
                "geometry_type": la.geometry_type,
                "feature_count": la.feature_count,
                "version": la.version,
                "last_update": la.last_update.isoformat() if la.last_update else None,
            }
            for la in layers
        ],
    }


@router.get("/{collectionId}/audit", summary="A layer's audit trail")
async def audit(layer: LayerDep, principal: PublisherDep, settings: SettingsDep) -> dict[str, Any]:
    """Who published, restored or deleted what and when, newest first (publishers of the
    layer's department and admins)."""
    rows = await run_in_threadpool(publish_preview.audit_trail, settings, layer, principal)
    return {"layer": layer.id, "audit": rows}


Token = Annotated[str, PathParam(description="The preview token a dry run answered.")]


class PublishPreviewBody(NewLayerParams):
    """The fields of a new layer, when the dry run did not give them all."""

    model_config = ConfigDict(extra="forbid")


@router.get("/previews/{token}", summary="A dry run's preview: its report")
async def get_preview(token: Token, principal: PublisherDep, settings: SettingsDep):
    """The report, layer, mode and expiry of a kept dry run (its key, or an admin)."""
    return await run_in_threadpool(publish_preview.describe, settings, token, principal)


@router.get("/previews/{token}/items", summary="A dry run's features (GeoJSON, WGS 84)")
async def preview_items(token: Token, principal: PublisherDep, settings: SettingsDep):
    """The accepted features of the preview (at most 10,000) for the preview map."""
    doc = await run_in_threadpool(publish_preview.features, settings, token, principal)
    return JSONResponse(doc, media_type="application/geo+json")


@router.post("/previews/{token}/publish", summary="Publish a dry run's preview")
async def publish_previewed(
    request: Request,
    token: Token,
    principal: PublisherDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    body: Annotated[PublishPreviewBody | None, Body()] = None,
) -> dict[str, Any]:
    """The previewed upload becomes the layer's data (or the new layer), without sending the
    file again; 409 when the layer changed since the dry run, 404 once the preview expired."""
    fields = body.fields() if body is not None else None
    report = await run_in_threadpool(
        publish_preview.publish, settings, token, principal, catalog, fields
    )
    await request.app.state.reload_catalog({report["layer"]})
    return report


@router.delete("/previews/{token}", status_code=204, summary="Discard a dry run's preview")
async def discard_preview(token: Token, principal: PublisherDep, settings: SettingsDep) -> None:
    """Drop the preview before it expires."""
    await run_in_threadpool(publish_preview.discard, settings, token, principal)


@router.delete("/{collectionId}", status_code=204, summary="Delete a layer (soft)")
async def delete(
    request: Request, layer: LayerDep, principal: PublisherDep, settings: SettingsDep
) -> None:
    """Hide the layer everywhere; its table and versions are kept."""
    await run_in_threadpool(publishing.delete, settings, layer, principal)
    await request.app.state.reload_catalog({layer.id})
