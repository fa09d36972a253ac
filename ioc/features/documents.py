"""OGC API documents built from the catalog: conformance (Features and Tiles), collections,
queryables.

Plain data (dicts) from a Layer and the server's base URL; the HTTP layer only serialises them.
"""

from __future__ import annotations

from typing import Any

from ioc.catalog.layers import Layer
from ioc.features import cql2
from ioc.features.crs import CRS84_URI, collection_crs, crs_for_srid
from ioc.media import CSV, GEOJSON, GEOJSON_SEQ, HTML, JSON, SCHEMA_JSON

REL_QUERYABLES = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
REL_TILESETS_VECTOR = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
REL_TILING_SCHEMES = "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"

_FEATURES = "http://www.opengis.net/spec/ogcapi-features-{part}/1.0/conf/{name}"
CONFORMANCE: tuple[str, ...] = (
    _FEATURES.format(part=1, name="core"),
    _FEATURES.format(part=1, name="geojson"),
    _FEATURES.format(part=1, name="html"),
    _FEATURES.format(part=1, name="oas30"),
    _FEATURES.format(part=2, name="crs"),
    _FEATURES.format(part=3, name="filter"),
    _FEATURES.format(part=3, name="features-filter"),
    _FEATURES.format(part=3, name="queryables"),
    *cql2.CONFORMANCE,
    # OGC API – Features Part 4: POST/PUT/DELETE and PATCH of features (layers.items_write).
    *(
        f"http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/{name}"
        for name in ("create-replace-delete", "update", "features")
    ),
    # OGC API – Tiles Part 1: vector tilesets of each collection, in WebMercatorQuad.
    *(
        f"http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/{name}"
        for name in ("core", "tileset", "tilesets-list", "geodata-tilesets", "mvt", "oas30")
    ),
)

_JSON_TYPES: dict[str, dict[str, str]] = {
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "text": {"type": "string"},
    "date": {"type": "string", "format": "date"},
    "timestamp": {"type": "string", "format": "date-time"},
}


def link(href: str, rel: str, type_: str, title: str) -> dict[str, str]:
    return {"href": href, "rel": rel, "type": type_, "title": title}


def collection_doc(layer: Layer, base: str) -> dict[str, Any]:
    """The collection resource (Part 1 /req/core/sfc-md-op, Part 2 crs and storageCrs)."""
    href = f"{base}/collections/{layer.id}"
    doc: dict[str, Any] = {
        "id": layer.id,
        "title": layer.title_vi,
        "description": "\n\n".join(d for d in (layer.description_vi, layer.description_en) if d)
        or layer.title_en,
        "keywords": list(layer.keywords),
        "itemType": "feature",
        "crs": [crs.uri for crs in collection_crs(layer.srid)],
        "storageCrs": crs_for_srid(layer.srid).uri,
        "links": [
            link(href, "self", JSON, "Lớp này / This collection"),
            link(f"{href}?f=html", "alternate", HTML, "Trang HTML / HTML page"),
            link(f"{href}/items", "items", GEOJSON, "Đối tượng / Features (GeoJSON)"),
            link(f"{href}/items?f=html", "items", HTML, "Đối tượng / Features (HTML)"),
            link(f"{href}/items?f=csv", "items", CSV, "Xuất CSV / CSV export"),
            link(
                f"{href}/items?f=geojsonseq",
                "items",
                GEOJSON_SEQ,
                "Xuất GeoJSON-seq / GeoJSON text sequence export",
            ),
            link(
                f"{href}/queryables",
                REL_QUERYABLES,
                SCHEMA_JSON,
                "Thuộc tính lọc được / Queryables",
            ),
            link(
                f"{href}/tiles",
                REL_TILESETS_VECTOR,
                JSON,
                "Tile vector (OGC API – Tiles) / Vector tilesets",
            ),
        ],
        "title_en": layer.title_en,
        "domain": layer.domain,
        "department": layer.department,
        "access": layer.access,
        "geometryType": layer.geometry_type,
    }
    if layer.extent:
        doc["extent"] = {"spatial": {"bbox": [list(layer.extent)], "crs": CRS84_URI}}
    return doc


def collections_doc(layers: list[Layer], base: str) -> dict[str, Any]:
    """The list of collections the caller may read."""
    return {
        "links": [
            link(f"{base}/collections", "self", JSON, "Các lớp / Collections"),
            link(f"{base}/collections?f=html", "alternate", HTML, "Trang HTML / HTML page"),
        ],
        "collections": [collection_doc(layer, base) for layer in layers],
        "crs": [crs.uri for crs in collection_crs(4326)],  # Part 2 /req/crs/fc-md-crs-list
    }


def queryables_doc(layer: Layer, base: str) -> dict[str, Any]:
    """JSON Schema of the properties a filter may name (Part 3 /req/queryables)."""
    properties: dict[str, Any] = {
        cql2.GEOMETRY_NAME: {
            "title": "Hình học / Geometry",
            "format": f"geometry-{layer.geometry_type.lower()}",
            "x-ogc-role": "primary-geometry",
        },
    }
    for attribute in layer.attributes:
        schema: dict[str, Any] = {
            "title": attribute.label_vi,
            "description": attribute.label_en,
            **_JSON_TYPES.get(attribute.type, {"type": "string"}),
        }
        if attribute.values:
            schema["enum"] = list(attribute.values)
        if attribute.unit:
            schema["x-ogc-unit"] = attribute.unit
        if attribute.name == layer.time_column:
            schema["x-ogc-role"] = "primary-instant"
        properties[attribute.name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{base}/collections/{layer.id}/queryables",
        "type": "object",
        "title": layer.title_vi,
        "properties": properties,
        "additionalProperties": False,
    }
