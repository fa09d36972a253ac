"""The landing page: what this server offers, for people and machines."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import CatalogDep, PrincipalDep, StateDep
from api.html import negotiate, render
from api.urls import BaseUrlDep
from ioc.features.documents import REL_TILING_SCHEMES
from ioc.maps.views import visible_views
from ioc.media import HTML, JSON, OPENAPI_JSON
from ioc.web.catalog import department_name, domain_summaries, recently_updated

router = APIRouter(tags=["service"])


def _links(base: str) -> list[dict[str, str]]:
    return [
        {
            "rel": "self",
            "type": JSON,
            "title": "This document",
            "href": f"{base}/?f=json",
        },
        {
            "rel": "alternate",
            "type": HTML,
            "title": "Trang chủ / Landing page",
            "href": f"{base}/?f=html",
        },
        {
            "rel": "service-desc",
            "type": OPENAPI_JSON,
            "title": "OpenAPI",
            "href": f"{base}/openapi.json",
        },
        {"rel": "service-doc", "type": HTML, "title": "API docs", "href": f"{base}/docs"},
        {
            "rel": "http://www.opengis.net/def/rel/ogc/1.0/asyncapi",
            "type": JSON,
            "title": "AsyncAPI: change events (Server-Sent Events at /events)",
            "href": f"{base}/asyncapi.json",
        },
        {
            "rel": "conformance",
            "type": JSON,
            "title": "Conformance classes",
            "href": f"{base}/conformance",
        },
        {
            "rel": "data",
            "type": JSON,
            "title": "Các lớp OGC API – Features / Collections",
            "href": f"{base}/collections",
        },
        {
            "rel": REL_TILING_SCHEMES,
            "type": JSON,
            "title": "Lưới tile / Tile matrix sets",
            "href": f"{base}/tileMatrixSets",
        },
        {
            "rel": "describedby",
            "type": JSON,
            "title": "Danh mục lớp / Layer catalog",
            "href": f"{base}/catalog/layers",
        },
        {
            "rel": "status",
            "type": JSON,
            "title": "Readiness",
            "href": f"{base}/readyz",
        },
        {
            "rel": "status",
            "type": JSON,
            "title": "Liveness",
            "href": f"{base}/healthz",
        },
    ]


@router.get("/", summary="Landing page")
async def landing(
    request: Request,
    catalog: CatalogDep,
    principal: PrincipalDep,
    state: StateDep,
    base: BaseUrlDep,
    f: str | None = None,
):
    """Links to everything the server offers; HTML for browsers (a front page that leads
    citizens, staff, analysts and developers to their place), JSON otherwise."""
    layers = catalog.visible(principal)
    doc = {
        "title": "ioc — Máy chủ bản đồ IOC TP.HCM / HCMC IOC map server",
        "description": "Lớp dữ liệu GIS của thành phố / The city's GIS layers: GeoJSON, vector tiles, "
        "digital addresses, map views.",
        "layers": len(layers),
        "links": _links(base),
    }
    if negotiate(request, f) == "html":
        department = principal.department
        own = [la for la in layers if department and la.department == department]
        context = {
            "doc": doc,
            "principal": principal,
            "domains": domain_summaries(layers),
            "views": [v for v in visible_views(state.views, principal) if v.id != "portal"],
            "department": department_name(department) if department else None,
            "own_layers": sorted(own, key=lambda la: la.title_vi),
            "latest": recently_updated(layers),
            "can_publish": principal.role in ("publisher", "admin"),
        }
        # The page differs by caller; the middleware's caching rule keeps it private then.
        return render(request, "landing.html", context)
    return doc
