"""The landing page: what this server offers, for people and machines."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import CatalogDep, PrincipalDep
from api.html import negotiate, render
from ioc.features.documents import REL_TILING_SCHEMES

router = APIRouter(tags=["service"])


def _links(request: Request) -> list[dict[str, str]]:
    base = str(request.base_url).rstrip("/")
    return [
        {
            "rel": "self",
            "type": "application/json",
            "title": "This document",
            "href": f"{base}/?f=json",
        },
        {
            "rel": "alternate",
            "type": "text/html",
            "title": "Trang chủ / Landing page",
            "href": f"{base}/?f=html",
        },
        {
            "rel": "service-desc",
            "type": "application/vnd.oai.openapi+json;version=3.0",
            "title": "OpenAPI",
            "href": f"{base}/openapi.json",
        },
        {"rel": "service-doc", "type": "text/html", "title": "API docs", "href": f"{base}/docs"},
        {
            "rel": "conformance",
            "type": "application/json",
            "title": "Conformance classes",
            "href": f"{base}/conformance",
        },
        {
            "rel": "data",
            "type": "application/json",
            "title": "Các lớp OGC API – Features / Collections",
            "href": f"{base}/collections",
        },
        {
            "rel": REL_TILING_SCHEMES,
            "type": "application/json",
            "title": "Lưới tile / Tile matrix sets",
            "href": f"{base}/tileMatrixSets",
        },
        {
            "rel": "describedby",
            "type": "application/json",
            "title": "Danh mục lớp / Layer catalog",
            "href": f"{base}/catalog/layers",
        },
        {
            "rel": "status",
            "type": "application/json",
            "title": "Readiness",
            "href": f"{base}/readyz",
        },
        {
            "rel": "status",
            "type": "application/json",
            "title": "Liveness",
            "href": f"{base}/healthz",
        },
    ]


@router.get("/", summary="Landing page")
async def landing(
    request: Request, catalog: CatalogDep, principal: PrincipalDep, f: str | None = None
):
    """Links to everything the server offers; HTML for browsers, JSON otherwise."""
    layers = catalog.visible(principal)
    doc = {
        "title": "ioc — Máy chủ bản đồ IOC TP.HCM / HCMC IOC map server",
        "description": "Lớp dữ liệu GIS của thành phố / The city's GIS layers: GeoJSON, vector tiles, "
        "digital addresses, map views.",
        "layers": len(layers),
        "links": _links(request),
    }
    if negotiate(request, f) == "html":
        domains: dict[str, int] = {}
        for layer in layers:
            domains[layer.domain] = domains.get(layer.domain, 0) + 1
        return render(
            request,
            "landing.html",
            {"doc": doc, "domains": sorted(domains.items()), "principal": principal},
        )
    return doc
