"""OGC API – Features Parts 1, 2 and 3: conformance, collections, items, queryables.

Handlers parse through the typed dependencies below, call one domain function in
``ioc.features.items`` / ``ioc.features.documents`` and format: GeoJSON is streamed as PostgreSQL produced it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from api.deps import AddressSettingsDep, CatalogDep, LayerDep, PrincipalDep
from api.html import negotiate, render
from api.limits import TimedStreamingResponse, deadline_in, within
from api.openapi import Responses
from api.urls import base_url, public_request_url
from ioc import media
from ioc.addresses.lookup import feature_addresses
from ioc.addresses.registry import address_guard, require_registry, validate_code
from ioc.catalog.access import Principal
from ioc.catalog.layers import Layer
from ioc.errors import InvalidParameter
from ioc.features import cql2, documents, history, items
from ioc.features.crs import CRS84, parse_bbox, parse_crs
from ioc.features.items import ItemsQuery, Page

router = APIRouter(tags=["features"])

MEDIA = {
    "json": media.GEOJSON,
    "html": media.HTML,
    "csv": media.CSV_UTF8,
    "geojsonseq": media.GEOJSON_SEQ,
}
_ACCEPT = ((media.HTML, "html"), (media.GEOJSON_SEQ, "geojsonseq"), (media.CSV, "csv"))
NUMBER_MATCHED = (
    "`numberMatched` is exact when present: the registry's count (as of the last publish) when "
    "the request has no bbox/datetime/filter and the layer is not realtime; otherwise a count "
    f"when the layer has at most {items.EXACT_COUNT_MAX:,} features, and omitted on larger "
    "layers (never an estimate). `next`/`prev` links page with `offset`."
)
ITEM_RESPONSES: Responses = {
    200: {"content": {media.GEOJSON: {}, media.HTML: {}, media.CSV: {}, media.GEOJSON_SEQ: {}}}
}


def item_format(request: Request, f: str | None) -> str:
    """``?f=json|geojson|html|csv|geojsonseq`` wins, then Accept, then GeoJSON."""
    if f:
        return "json" if f == "geojson" else negotiate(request, f, tuple(MEDIA))
    accept = request.headers.get("accept", "")
    return next((fmt for media, fmt in _ACCEPT if media in accept), "json")


def cache_headers(principal: Principal, layer: Layer | None = None) -> dict[str, str]:
    """Public data may be cached by anyone for a minute; anything else never leaves the
    client's private cache (and responses vary with the API key)."""
    public = layer.access == "public" if layer else not principal.authenticated
    return {
        "Cache-Control": "public, max-age=60" if public else "private, no-store",
        "Vary": "Accept, Authorization",
    }


def answer(
    request: Request,
    f: str | None,
    doc: dict,
    headers: dict[str, str],
    template: str,
    context: dict | None = None,
    media_type: str | None = None,
):
    """The document as HTML (``?f=html`` or a browser) or JSON, with the caching headers."""
    if negotiate(request, f) == "html":
        response = render(request, template, {"doc": doc, **(context or {})})
        response.headers.update(headers)
        return response
    return JSONResponse(doc, media_type=media_type, headers=headers)


def not_modified(request: Request, tag: str) -> bool:
    """If-None-Match (weak comparison, RFC 9110 13.1.2)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or tag in tags


ITEMS_PARAMETERS = frozenset(
    {
        "bbox",
        "bbox-crs",
        "datetime",
        "limit",
        "offset",
        "filter",
        "filter-lang",
        "filter-crs",
        "sortby",
        "properties",
        "crs",
        "f",
        "address",
        "at",
    }
)


def reject_unknown(request: Request, known: frozenset[str]) -> None:
    """400 naming the first query parameter the endpoint does not take."""
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidParameter(
            f"Unknown query parameter '{unknown[0]}': this endpoint takes "
            f"{', '.join(sorted(known))}.",
            parameter=unknown[0],
        )


LIMIT_DOC = (
    f"Features per page, default {items.DEFAULT_LIMIT}, at most {items.MAX_LIMIT:,}: a "
    f"larger value is capped to {items.MAX_LIMIT:,} (not refused; ogcapi-features#640) and "
    "the `next` link goes on from there. csv/geojsonseq without `limit`: the whole collection. "
    "Anonymous callers get at most IOC_FEATURES_ANONYMOUS_MAX_FEATURES (10,000 by default) per "
    'answer; an export cut there carries `Link: <…>; rel="next"`.'
)

AT_DOC = (
    "RFC 3339 date-time: the features as they were then (layers whose manifest declares "
    "`history`; 400 on other layers and before what the layer keeps). Combines with every "
    "other parameter."
)


async def items_query(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    catalog: CatalogDep,
    address_settings: AddressSettingsDep,
    bbox: Annotated[
        str | None,
        Query(
            description="minx,miny,maxx,maxy (4 or 6 numbers) in "
            "`bbox-crs` axis order (EPSG:4326 is lat,lon)"
        ),
    ] = None,
    bbox_crs: Annotated[
        str | None, Query(alias="bbox-crs", description="CRS URI of `bbox` (default CRS84)")
    ] = None,
    datetime_: Annotated[
        str | None,
        Query(
            alias="datetime", description="RFC 3339 instant or interval `start/end` (`..` = open)"
        ),
    ] = None,
    limit: Annotated[int | None, Query(ge=1, description=LIMIT_DOC)] = None,
    offset: Annotated[int, Query(ge=0, le=2**53, description="Features to skip")] = 0,
    filter_: Annotated[str | None, Query(alias="filter", description="CQL2 filter")] = None,
    filter_lang: Annotated[
        str | None, Query(alias="filter-lang", description="cql2-text (default) or cql2-json")
    ] = None,
    filter_crs: Annotated[
        str | None,
        Query(alias="filter-crs", description="CRS URI of geometries in `filter` (default CRS84)"),
    ] = None,
    sortby: Annotated[str | None, Query(description="`+a,-b`: sort keys")] = None,
    properties: Annotated[str | None, Query(description="`a,b`: properties to return")] = None,
    crs: Annotated[str | None, Query(description="CRS URI of the response")] = None,
    address: Annotated[
        str | None, Query(description="Digital address code: only features linked to that address")
    ] = None,
    at: Annotated[str | None, Query(description=AT_DOC)] = None,
) -> ItemsQuery:
    """The items query parameters, validated against the layer (400 names the parameter)."""
    # OGC API – Features /req/core/query-param-unknown: an unknown parameter is a 400, so a
    # misspelt filter never silently returns the whole collection.
    reject_unknown(request, ITEMS_PARAMETERS)
    if address is not None:  # the links are the address layer's data: its read check applies
        require_registry(catalog, principal, address_settings)
    storage = layer.srid
    box_crs = parse_crs(bbox_crs, parameter="bbox-crs", storage_srid=storage)
    return ItemsQuery(
        bboxes=tuple(parse_bbox(bbox, box_crs)) if bbox is not None else (),
        interval=items.parse_datetime(datetime_) if datetime_ is not None else None,
        filter=cql2.parse_filter(filter_, filter_lang) if filter_ is not None else None,
        filter_crs=parse_crs(filter_crs, parameter="filter-crs", storage_srid=storage),
        limit=min(limit, items.MAX_LIMIT) if limit is not None else None,
        offset=offset,
        sortby=items.parse_sortby(sortby, layer) if sortby else (),
        properties=items.parse_properties(properties, layer) if properties is not None else None,
        crs=parse_crs(crs, parameter="crs", storage_srid=storage),
        address=validate_code(address, address_settings.code_pattern, "address")
        if address is not None
        else None,
        at=await history.instant(request.app.state.pool, layer, at) if at is not None else None,
    )


ItemsQueryDep = Annotated[ItemsQuery, Depends(items_query)]
CrsParam = Annotated[str | None, Query(description="CRS URI of the response")]
FeatureIdPath = Annotated[str, Path(alias="featureId", description="Feature id")]


@router.get("/conformance", summary="Conformance classes (only those that pass)")
async def conformance(request: Request, principal: PrincipalDep, f: str | None = None):
    """OGC API – Features Parts 1–3 and the CQL2 classes this server implements."""
    doc = {"conformsTo": list(documents.CONFORMANCE)}
    return answer(request, f, doc, cache_headers(principal), "conformance.html")


@router.get("/collections", summary="Collections the caller may read")
async def list_collections(
    request: Request, principal: PrincipalDep, catalog: CatalogDep, f: str | None = None
):
    """Every layer visible to the caller (internal/restricted ones only with a key)."""
    doc = documents.collections_doc(catalog.visible(principal), base_url(request))
    return answer(
        request, f, doc, cache_headers(principal), "collections.html", {"principal": principal}
    )


@router.get("/collections/{collectionId}", summary="One collection")
async def get_collection(
    request: Request, layer: LayerDep, principal: PrincipalDep, f: str | None = None
):
    """Extent, CRSs (Part 2: `crs`, `storageCrs`) and links of a layer; 404 if hidden."""
    doc = documents.collection_doc(layer, base_url(request))
    return answer(
        request,
        f,
        doc,
        cache_headers(principal, layer),
        "collection.html",
        {"layer": layer, "queryables": documents.queryables_doc(layer, base_url(request))},
    )


@router.get(
    "/collections/{collectionId}/queryables",
    summary="Queryable properties",
    responses={200: {"content": {media.SCHEMA_JSON: {}, media.HTML: {}}}},
)
async def get_queryables(
    request: Request, layer: LayerDep, principal: PrincipalDep, f: str | None = None
):
    """JSON Schema of the properties usable in `filter`, `sortby` and `properties`."""
    doc = documents.queryables_doc(layer, base_url(request))
    return answer(
        request,
        f,
        doc,
        cache_headers(principal, layer),
        "queryables.html",
        {"layer": layer},
        media_type=media.SCHEMA_JSON,
    )


def page_links(request: Request, layer: Layer, q: ItemsQuery, page: Page) -> list[dict]:
    """self/alternate/collection links, and next/prev by offset."""
    url = public_request_url(request).remove_query_params("f")
    links = [
        documents.link(
            str(url.include_query_params(f="json")), "self", media.GEOJSON, "Trang này / This page"
        ),
        documents.link(
            str(url.include_query_params(f="html")),
            "alternate",
            media.HTML,
            "Trang HTML / HTML page",
        ),
        documents.link(
            f"{base_url(request)}/collections/{layer.id}",
            "collection",
            media.JSON,
            "Lớp / Collection",
        ),
    ]
    limit = q.limit or items.DEFAULT_LIMIT
    if page.has_next:
        links.append(
            documents.link(
                str(url.include_query_params(offset=q.offset + limit, limit=limit, f="json")),
                "next",
                media.GEOJSON,
                "Trang sau / Next page",
            )
        )
    if q.offset > 0:
        links.append(
            documents.link(
                str(
                    url.include_query_params(offset=max(0, q.offset - limit), limit=limit, f="json")
                ),
                "prev",
                media.GEOJSON,
                "Trang trước / Previous page",
            )
        )
    return links


async def feature_collection(
    chunks: AsyncIterator[bytes], page: Page, links
) -> AsyncIterator[bytes]:
    """A FeatureCollection around the streamed features; counts and links come last, once
    the stream has told whether there is a next page."""
    yield b'{"type":"FeatureCollection","features":['
    try:
        async for chunk in chunks:
            yield chunk
    finally:  # closed early: the database stream is closed now, not when collected
        await chunks.aclose()  # type: ignore[attr-defined]
    tail: dict[str, Any] = {"numberReturned": page.returned}
    if page.matched is not None:
        tail["numberMatched"] = page.matched
    tail["timeStamp"] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    tail["links"] = links(page)
    yield b"]," + orjson.dumps(tail)[1:]


async def collect(chunks: AsyncIterator[bytes]) -> list[dict[str, Any]]:
    """The features of a (small) page as dicts, for HTML."""
    body = b"".join([chunk async for chunk in chunks])
    return orjson.loads(b"[" + body + b"]")


def export_headers(request: Request, q: ItemsQuery, page: Page, fmt: str) -> dict[str, str]:
    """An export cut at the anonymous bound says where the rest is: ``Link: rel=next``
    (RFC 8288, as Part 1 recommends links in headers) unless the count shows nothing is left,
    and ``OGC-NumberMatched`` when the count is known."""
    headers = {}
    limit = q.limit or items.DEFAULT_LIMIT
    if page.matched is not None:
        headers["OGC-NumberMatched"] = str(page.matched)
    if page.matched is None or page.matched > q.offset + limit:
        url = public_request_url(request).include_query_params(offset=q.offset + limit, limit=limit)
        headers["Link"] = f'<{url}>; rel="next"; type="{MEDIA[fmt].split(";")[0]}"'
    return headers


@router.get(
    "/collections/{collectionId}/items",
    summary="Features of a collection",
    description="bbox, datetime, CQL2 filter, sortby, properties, crs; GeoJSON, HTML, "
    "CSV or GeoJSON text sequence. " + NUMBER_MATCHED,
    responses=ITEM_RESPONSES,
)
async def get_items(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    q: ItemsQueryDep,
    f: str | None = None,
):
    """A page of features, streamed from PostgreSQL; 304 when If-None-Match matches."""
    fmt = item_format(request, f)
    if q.limit is None and fmt in ("json", "html"):
        q = replace(q, limit=items.DEFAULT_LIMIT)
    bounds = request.app.state.settings.features
    q, cut = items.capped(q, None if principal.authenticated else bounds.anonymous_max_features)
    representation = f"{fmt};limit={q.limit}" if cut else fmt  # a bounded answer is another one
    tag = items.etag(layer, representation, request.query_params.multi_items())
    headers = {**cache_headers(principal, layer), "ETag": tag, "Content-Crs": f"<{q.crs.uri}>"}
    if not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    domain_fmt = {"json": "geojson", "html": "geojson"}.get(fmt, fmt)
    deadline, seconds = deadline_in(bounds.export_max_seconds), bounds.export_max_seconds
    async with within(deadline, seconds):  # the first rows (and the whole of an HTML page)
        pool = request.app.state.read_pool([layer.id])  # a replica (docs/scaling.md)
        page, chunks = await items.stream_items(pool, layer, q, domain_fmt)
        found = await collect(chunks) if fmt == "html" else None
    if fmt == "html":
        context = {
            "layer": layer,
            "features": found,
            "page": page,
            "links": {x["rel"]: x["href"] for x in page_links(request, layer, q, page)},
            "q": q,
        }
        response = render(request, "items.html", context)
        response.headers.update(headers)
        return response
    if fmt == "json":
        chunks = feature_collection(chunks, page, lambda p: page_links(request, layer, q, p))
    else:
        if cut:
            headers.update(export_headers(request, q, page, fmt))
        if fmt == "csv":
            headers["Content-Disposition"] = f'attachment; filename="{layer.id}.csv"'
    return TimedStreamingResponse(
        chunks, media_type=MEDIA[fmt], headers=headers, deadline=deadline, seconds=seconds
    )


@router.get(
    "/collections/{collectionId}/items/{featureId:path}",
    summary="One feature",
    responses={200: {"content": {media.GEOJSON: {}, media.HTML: {}}}},
)
async def get_item(
    request: Request,
    layer: LayerDep,
    principal: PrincipalDep,
    feature_id: FeatureIdPath,
    catalog: CatalogDep,
    address_settings: AddressSettingsDep,
    crs: CrsParam = None,
    f: str | None = None,
):
    """A feature by id (404 when unknown), in CRS84 or the `crs` asked for; its ETag follows
    its content (not the layer's version), 304 when If-None-Match names it."""
    fmt = negotiate(request, f, ("json", "html"))
    out_crs = parse_crs(crs, parameter="crs", storage_srid=layer.srid, default=CRS84)
    pool = request.app.state.read_pool([layer.id])  # a replica (docs/scaling.md)
    body, digest = await items.get_feature(pool, layer, feature_id, out_crs)
    tag = items.item_etag(
        layer, digest, fmt, [("featureId", feature_id), *request.query_params.multi_items()]
    )
    headers = {**cache_headers(principal, layer), "ETag": tag, "Content-Crs": f"<{out_crs.uri}>"}
    if not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    href = f"{base_url(request)}/collections/{layer.id}"
    links = [
        documents.link(
            f"{href}/items/{quote(feature_id, safe='')}",
            "self",
            media.GEOJSON,
            "Đối tượng này / This feature",
        ),
        documents.link(href, "collection", media.JSON, "Lớp / Collection"),
    ]
    if fmt == "html":
        guard = address_guard(catalog, address_settings)
        async with request.app.state.pool.acquire() as conn:
            linked = await feature_addresses(conn, guard, principal, layer, feature_id)
        context = {"feature": orjson.loads(body), "links": links, "addresses": linked}
        response = render(request, "feature.html", {"layer": layer, **context})
        response.headers.update(headers)
        return response
    # Splice the links into the feature PostgreSQL wrote: drop its final '}'.
    content = body[:-1] + b',"links":' + orjson.dumps(links) + b"}"
    return Response(content, media_type=media.GEOJSON, headers=headers)
