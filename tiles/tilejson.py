"""TileJSON 3.0.0 documents and OGC API - Tiles metadata for catalog layers.

URLs are passed in by the caller (``api``), which knows the public base URL.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from ioc.catalog.layers import Layer
from ioc.media import JSON, MVT
from tiles.settings import TileSettings
from tiles.sql import cluster_max_zoom, is_clustered, merge_px, vector_fields

WEB_MERCATOR_QUAD = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
CRS_3857 = "http://www.opengis.net/def/crs/EPSG/0/3857"
# Half the side of the Web Mercator square, in metres (π × 6378137).
ORIGIN = 20037508.342789244


def union_bounds(layers: Sequence[Layer]) -> list[float]:
    """The WGS 84 box around the layers' extents (the world when none has an extent)."""
    extents = [la.extent for la in layers if la.extent]
    if not extents:
        return [-180.0, -85.0511, 180.0, 85.0511]
    return [
        min(e[0] for e in extents),
        min(e[1] for e in extents),
        max(e[2] for e in extents),
        max(e[3] for e in extents),
    ]


def vector_layer(layer: Layer, settings: TileSettings) -> dict[str, Any]:
    """One ``vector_layers`` entry: id (= MVT layer name), fields with types, zooms."""
    entry: dict[str, Any] = {
        "id": layer.id,
        "description": f"{layer.title_vi} — {layer.title_en}",
        "minzoom": layer.zoom_min,
        "maxzoom": layer.zoom_max,
        "fields": vector_fields(
            layer,
            "cluster" if is_clustered(layer, settings) else "features",
            merged=merge_px(layer, settings) > 0,
        ),
        "geometry_type": layer.geometry_type,
    }
    if is_clustered(layer, settings):
        # Non-standard but harmless: tells a client which zooms carry aggregated points.
        entry["cluster_maxzoom"] = cluster_max_zoom(layer, settings)
    return entry


def tilejson(
    layers: Sequence[Layer], tile_url: str, settings: TileSettings, version: object = None
) -> dict[str, Any]:
    """TileJSON 3.0.0 for one or several layers; ``tile_url`` has {z}/{x}/{y} placeholders and
    gets ``?v=<version>`` (tiles.versions: the layers' tile version, so that caches may keep
    its tiles for ever) when one is given."""
    bounds = union_bounds(layers)
    minzoom = min(la.zoom_min for la in layers)
    maxzoom = max(la.zoom_max for la in layers)
    center_zoom = max(minzoom, min(maxzoom, 12))
    sources = sorted({(la.source.get("name") or "") for la in layers} - {""})
    doc: dict[str, Any] = {
        "tilejson": "3.0.0",
        "name": ", ".join(la.id for la in layers),
        "description": "; ".join(f"{la.title_vi} ({la.title_en})" for la in layers),
        "scheme": "xyz",
        "tiles": [f"{tile_url}?v={version}" if version is not None else tile_url],
        "vector_layers": [vector_layer(la, settings) for la in layers],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": bounds,
        "center": [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, center_zoom],
    }
    if sources:
        doc["attribution"] = html.escape(" · ".join(sources))
    return doc


def tileset_list(layer: Layer, base: str) -> dict[str, Any]:
    """``/collections/{id}/tiles``: the layer's one tileset (WebMercatorQuad, vector)."""
    tiles = f"{base}/collections/{layer.id}/tiles"
    return {
        "title": f"{layer.title_vi} — {layer.title_en}",
        "links": [{"rel": "self", "type": JSON, "href": tiles}],
        "tilesets": [
            {
                "title": f"{layer.title_vi} — {layer.title_en}",
                "dataType": "vector",
                "crs": CRS_3857,
                "tileMatrixSetURI": WEB_MERCATOR_QUAD,
                "links": [
                    {"rel": "self", "type": JSON, "href": f"{tiles}/WebMercatorQuad"},
                    {
                        "rel": "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme",
                        "type": JSON,
                        "href": f"{base}/tileMatrixSets/WebMercatorQuad",
                    },
                    {
                        "rel": "item",
                        "type": MVT,
                        "templated": True,
                        "href": f"{tiles}/WebMercatorQuad/{{tileMatrix}}/{{tileRow}}/{{tileCol}}",
                    },
                    {
                        "rel": "describedby",
                        "type": JSON,
                        "href": f"{tiles}/WebMercatorQuad/tilejson.json",
                        "title": "TileJSON",
                    },
                ],
            }
        ],
    }


def tileset(layer: Layer, base: str) -> dict[str, Any]:
    """``/collections/{id}/tiles/WebMercatorQuad``: tileset metadata with limits by zoom."""
    doc = tileset_list(layer, base)["tilesets"][0]
    doc["tileMatrixSetLimits"] = [
        {
            "tileMatrix": str(z),
            "minTileRow": 0,
            "maxTileRow": (1 << z) - 1,
            "minTileCol": 0,
            "maxTileCol": (1 << z) - 1,
        }
        for z in range(layer.zoom_min, layer.zoom_max + 1)
    ]
    doc["layers"] = [
        {
            "id": layer.id,
            "dataType": "vector",
            "geometryDimension": _dimension(layer.geometry_type),
            "minTileMatrix": str(layer.zoom_min),
            "maxTileMatrix": str(layer.zoom_max),
        }
    ]
    return doc


def _dimension(geometry_type: str) -> int:
    return 0 if "Point" in geometry_type else 1 if "Line" in geometry_type else 2


def tile_matrix_set(base: str, max_zoom: int = 24) -> dict[str, Any]:
    """The WebMercatorQuad tile matrix set (OGC Two Dimensional Tile Matrix Set 2.0)."""
    matrices = []
    for z in range(max_zoom + 1):
        size = 1 << z
        # Scale denominator for 0.28 mm pixels, as the standard defines it.
        cell = 2 * ORIGIN / 256 / size
        matrices.append(
            {
                "id": str(z),
                "scaleDenominator": cell / 0.00028,
                "cellSize": cell,
                "cornerOfOrigin": "topLeft",
                "pointOfOrigin": [-ORIGIN, ORIGIN],
                "tileWidth": 256,
                "tileHeight": 256,
                "matrixWidth": size,
                "matrixHeight": size,
            }
        )
    return {
        "id": "WebMercatorQuad",
        "title": "Google Maps Compatible for the World",
        "uri": WEB_MERCATOR_QUAD,
        "crs": CRS_3857,
        "orderedAxes": ["E", "N"],
        "tileMatrices": matrices,
        "links": [
            {
                "rel": "self",
                "type": JSON,
                "href": f"{base}/tileMatrixSets/WebMercatorQuad",
            }
        ],
    }
