"""The layer catalog as the caller may see it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.deps import CatalogDep, PrincipalDep
from api.html import negotiate, render
from api.urls import BaseUrlDep, page_base
from ioc.catalog.layers import Layer, get_layer_doc
from ioc.web import catalog as browse

router = APIRouter(prefix="/catalog", tags=["catalog"])


def summary(layer: Layer, base: str) -> dict[str, Any]:
    """One line of the catalog list."""
    return {
        "id": layer.id,
        "title": {"vi": layer.title_vi, "en": layer.title_en},
        "domain": layer.domain,
        "department": layer.department,
        "access": layer.access,
        "geometry_type": layer.geometry_type,
        "feature_count": layer.feature_count,
        "version": layer.version,
        "href": f"{base}/catalog/layers/{layer.id}",
    }


@router.get("/layers", summary="Layers the caller may read")
async def list_layers(
    request: Request,
    catalog: CatalogDep,
    principal: PrincipalDep,
    base: BaseUrlDep,
    domain: str | None = None,
    q: Annotated[
        str | None, Query(description="Words of a title, id or keyword, with or without diacritics")
    ] = None,
    department: str | None = None,
    access: str | None = None,
    cadence: str | None = None,
    f: str | None = None,
):
    """Every layer visible to the caller, with domain, owner and access level; ``q`` searches
    titles, ids and keywords diacritic-insensitively ('ngap' finds 'Điểm ngập'), the other
    parameters filter."""
    filters = browse.CatalogFilters.parse(
        q=q, domain=domain, department=department, access=access, cadence=cadence
    )
    visible = catalog.visible(principal)
    layers = browse.search_layers(visible, filters)
    doc = {
        "layers": [summary(la, base) for la in layers],
        "numberOfLayers": len(layers),
        "domains": sorted({la.domain for la in layers}),
    }
    if negotiate(request, f) == "html":
        pages = page_base(request)
        context = {
            "doc": doc,
            "principal": principal,
            "filters": filters,
            "facets": browse.facets(visible),
            "rows": [
                {
                    "layer": la,
                    "domain": browse.domain_name(la.domain),
                    "department": browse.department_name(la.department),
                    "cadence": browse.name_of(browse.CADENCE_NAMES, la.cadence),
                    "updated": browse.updated(la),
                    "use": browse.usage(la, pages),
                    "gdal": browse.usage(la, base),  # copied into other programs: absolute
                }
                for la in layers
            ],
        }
        return render(request, "catalog.html", context)
    return doc


@router.get("/layers/{layer_id}", summary="One layer's manifest, schema, extent and counts")
async def get_layer(
    request: Request,
    layer_id: str,
    catalog: CatalogDep,
    principal: PrincipalDep,
    f: str | None = None,
):
    """The layer's full description; 404 when unknown or not readable by the caller."""
    layer = catalog.get(layer_id, principal)
    doc = get_layer_doc(layer)
    if negotiate(request, f) == "html":
        return render(request, "layer.html", {"doc": doc, "layer": layer})
    return doc
