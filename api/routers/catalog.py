"""The layer catalog as the caller may see it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.deps import CatalogDep, PrincipalDep
from api.html import negotiate, render
from api.urls import BaseUrlDep
from ioc.catalog.layers import Layer, get_layer_doc

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
    f: str | None = None,
):
    """Every layer visible to the caller, with domain, owner and access level."""
    layers = [la for la in catalog.visible(principal) if domain is None or la.domain == domain]
    doc = {
        "layers": [summary(la, base) for la in layers],
        "numberOfLayers": len(layers),
        "domains": sorted({la.domain for la in layers}),
    }
    if negotiate(request, f) == "html":
        return render(request, "catalog.html", {"doc": doc, "principal": principal})
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
