"""Departments publish their layers: create, replace/append data, versions, restore, delete."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from api.deps import LayerDep, PrincipalDep, SettingsDep
from api.openapi import Responses
from ioc.catalog.access import Principal
from ioc.catalog.layers import Layer, get_layer_doc
from ioc.config import Settings
from ioc.errors import UploadTooLarge
from layers import publishing

router = APIRouter(prefix="/layers", tags=["publishing"])

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
    **options: Any,
) -> dict[str, Any]:
    publishing.check_can_write(principal, layer)
    path = await _receive(request, settings.publish.upload_max_bytes)
    try:
        report = await run_in_threadpool(
            publishing.publish_upload, settings, layer, path, principal, mode=mode, **options
        )
    finally:
        path.unlink(missing_ok=True)
    await request.app.state.reload_catalog({layer.id})
    return report.as_dict()


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
    principal: PrincipalDep,
    settings: SettingsDep,
    params: UploadDep,
) -> dict[str, Any]:
    """Validate the uploaded file and make it the layer's data in one transaction."""
    return await _upload(request, layer, principal, settings, "replace", **asdict(params))


@router.post(
    "/{collectionId}/data",
    summary="Append to a layer's data",
    description=UPLOAD_DOC,
    responses=RESPONSES,
)
async def append_data(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    params: UploadDep,
) -> dict[str, Any]:
    """Validate the uploaded file and add its features to the layer in one transaction."""
    return await _upload(request, layer, principal, settings, "append", **asdict(params))


@router.get("/{collectionId}/versions", summary="A layer's data versions")
async def versions(
    layer: LayerDep, principal: PrincipalDep, settings: SettingsDep
) -> dict[str, Any]:
    """Past versions, newest first; `restorable` ones can be restored."""
    rows = await run_in_threadpool(publishing.versions, settings, layer, principal)
    return {"layer": layer.id, "current": layer.version, "versions": rows}


@router.post("/{collectionId}/versions/{version}/restore", summary="Restore an earlier version")
async def restore(
    request: Request, layer: LayerDep, principal: PrincipalDep, settings: SettingsDep, version: int
) -> dict[str, Any]:
    """Make a kept version the live data again; recorded as a new version."""
    report = await run_in_threadpool(publishing.restore, settings, layer, version, principal)
    await request.app.state.reload_catalog({layer.id})
    return report.as_dict()


@router.post("", status_code=201, summary="Create a layer from a manifest")
async def create(
    request: Request,
    principal: PrincipalDep,
    settings: SettingsDep,
    manifest: Annotated[
        dict[str, Any], Body(description="A layer manifest (as the YAML files in layers/catalog).")
    ],
):
    """A publisher creates layers in its own department; admins anywhere."""
    layer_id = await run_in_threadpool(publishing.create, settings, manifest, principal)
    catalog = await request.app.state.reload_catalog({layer_id})
    return get_layer_doc(catalog.get(layer_id, principal))


@router.delete("/{collectionId}", status_code=204, summary="Delete a layer (soft)")
async def delete(
    request: Request, layer: LayerDep, principal: PrincipalDep, settings: SettingsDep
) -> None:
    """Hide the layer everywhere; its table and versions are kept."""
    await run_in_threadpool(publishing.delete, settings, layer, principal)
    await request.app.state.reload_catalog({layer.id})
