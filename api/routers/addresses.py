"""Digital addresses: look-up by code, search, reverse geocoding, linked features, batch
geocoding, and "what is here"."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from api.deps import AddressSettingsDep, CatalogDep, PoolDep, PrincipalDep, ReadPoolDep
from api.openapi import Responses
from api.urls import base_url
from ioc.addresses import geocode, lookup, registry
from ioc.addresses.whats_here import what_is_here
from ioc.errors import InvalidParameter
from ioc.media import CSV_UTF8, GEOJSON

router = APIRouter(tags=["addresses"])


Lon = Annotated[float, Query(ge=-180, le=180, description="Longitude, WGS 84 degrees")]
Lat = Annotated[float, Query(ge=-90, le=90, description="Latitude, WGS 84 degrees")]


async def read_upload(request: Request, file: UploadFile | None, limit: int) -> bytes:
    """The uploaded bytes (multipart file or raw body), reading at most ``limit`` + 1 bytes."""
    if file is not None:
        return await file.read(limit + 1)
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        # The form parser has read the body already: there is no raw CSV left to read.
        raise InvalidParameter(
            "Thiếu phần 'file' / the multipart body has no part named "
            "'file': send the CSV as the 'file' part, or as a text/csv body.",
            parameter="file",
        )
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            break
    return bytes(data)


# The address answers are GeoJSON: documented so, not as FastAPI's default application/json.
GEOJSON_ANSWER: Responses = {200: {"content": {GEOJSON: {}}}}


def geojson(doc: dict[str, Any]) -> JSONResponse:
    return JSONResponse(doc, media_type=GEOJSON)


@router.get(
    "/addresses",
    summary="Search addresses (free text, with or without diacritics)",
    responses=GEOJSON_ANSWER,
)
async def search(
    request: Request,
    pool: ReadPoolDep,
    catalog: CatalogDep,
    principal: PrincipalDep,
    settings: AddressSettingsDep,
    q: Annotated[str, Query(description="Free text: 'tan dinh', '12 Lê Lợi, Bến Thành'")],
    near: Annotated[str | None, Query(description="lon,lat: rank nearer results higher")] = None,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat filter")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
):
    """Addresses ranked by how much of the text they explain (``score``), typo-tolerant."""
    registry.require_registry(catalog, principal, settings)
    point = registry.parse_point(near, "near") if near else None
    box = registry.parse_bbox(bbox) if bbox else None
    async with pool.acquire() as conn:
        hits = await geocode.search_addresses(conn, q, near=point, bbox=box, limit=limit)
    base = base_url(request)
    return geojson(
        {
            "type": "FeatureCollection",
            "query": q,
            "numberReturned": len(hits),
            "features": [geocode.hit_feature(h, base) for h in hits],
        }
    )


@router.get(
    "/addresses/reverse",
    summary="Nearest address to a position, and its ward",
    responses={**GEOJSON_ANSWER, 404: {"description": "No digital address within the radius"}},
)
async def reverse(
    request: Request,
    pool: ReadPoolDep,
    catalog: CatalogDep,
    principal: PrincipalDep,
    settings: AddressSettingsDep,
    lon: Lon,
    lat: Lat,
    radius: Annotated[float | None, Query(gt=0, le=50_000, description="metres")] = None,
):
    """The nearest valid address (distance in metres on the spheroid) and the ward polygon
    (`ward_at_position`: null when there is no ward layer the caller may read)."""
    registry.require_registry(catalog, principal, settings)
    async with pool.acquire() as conn:
        row, ward = await lookup.reverse_geocode(
            conn, catalog, principal, lon, lat, radius or settings.reverse_radius_m
        )
    return geojson(
        registry.address_feature(
            row, base_url(request), distance_m=round(row["distance_m"], 1), ward_at_position=ward
        )
    )


@router.post("/addresses/geocode", summary="Batch geocoding of a CSV of addresses")
async def batch_geocode(
    request: Request,
    pool: PoolDep,
    catalog: CatalogDep,
    principal: PrincipalDep,
    settings: AddressSettingsDep,
    file: UploadFile | None = None,
    f: Annotated[Literal["csv", "json"], Query()] = "csv",
):
    """Upload a CSV (multipart ``file`` or a ``text/csv`` body) with an ``address`` column and
    an optional ``id``; get code, lon, lat, ward and a match score per row."""
    registry.require_registry(catalog, principal, settings)
    limit = geocode.max_upload_bytes(settings.geocode_max_rows)
    data = await read_upload(request, file, limit)
    rows = geocode.read_geocode_csv(data, settings.geocode_max_rows)
    async with pool.acquire() as conn:
        records = await geocode.geocode_rows(conn, rows)
    if f == "json":
        return {"numberOfRows": len(records), "rows": records}
    return Response(
        geocode.geocode_csv(records),
        media_type=CSV_UTF8,
        headers={"Content-Disposition": 'attachment; filename="geocoded.csv"'},
    )


@router.get("/addresses/{code}", summary="One digital address", responses=GEOJSON_ANSWER)
async def get_address(
    request: Request,
    code: str,
    pool: ReadPoolDep,
    catalog: CatalogDep,
    principal: PrincipalDep,
    settings: AddressSettingsDep,
):
    """Point, full Vietnamese address, wards before and since 2025, links; 400 for a malformed
    code, 404 for an unknown one."""
    registry.require_registry(catalog, principal, settings)
    code = registry.validate_code(code, settings.code_pattern)
    async with pool.acquire() as conn:
        row = await lookup.get_address(conn, code)
    return geojson(registry.address_feature(row, base_url(request)))


@router.get(
    "/addresses/{code}/features", summary="Features linked to an address", responses=GEOJSON_ANSWER
)
async def address_features(
    request: Request,
    code: str,
    pool: PoolDep,
    catalog: CatalogDep,
    principal: PrincipalDep,
    settings: AddressSettingsDep,
):
    """Features of point layers linked to the address, from the layers the caller may read."""
    registry.require_registry(catalog, principal, settings)
    code = registry.validate_code(code, settings.code_pattern)
    async with pool.acquire() as conn:
        await lookup.get_address(conn, code)
        features = await lookup.linked_features(conn, catalog, principal, code, base_url(request))
    return geojson(
        {
            "type": "FeatureCollection",
            "address": code,
            "numberReturned": len(features),
            "features": features,
        }
    )


@router.get("/whats-here", summary="What is here: wards, flood, planning, services, reports")
async def whats_here(
    request: Request,
    pool: PoolDep,
    catalog: CatalogDep,
    principal: PrincipalDep,
    settings: AddressSettingsDep,
    lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    address: Annotated[str | None, Query(description="A digital address code")] = None,
):
    """One answer about a position or an address, from the layers the caller may read only."""
    code = (
        registry.validate_code(address, settings.code_pattern, "address")
        if address is not None
        else None
    )
    async with pool.acquire() as conn:
        return await what_is_here(
            conn,
            catalog,
            principal,
            settings,
            lon=lon,
            lat=lat,
            code=code,
            base_url=base_url(request),
        )
