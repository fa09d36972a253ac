"""MapLibre GL style (spec v8) for a set of catalog layers, built from their catalog styles.

Self-contained: one vector source (this server's TileJSON), no basemap, no sprite and no glyphs,
so a map works without the internet. Text labels need glyphs; they are added only when the
caller passes a glyphs URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ioc.catalog import Layer
from tiles.settings import TileSettings
from tiles.sql import cluster_max_zoom, is_clustered, is_point_layer

SOURCE = "ioc"
# A cluster circle grows with the square root of its count (area ∝ count), within bounds.
CLUSTER_RADIUS = ["min", 28, ["+", 4, ["*", 0.9, ["sqrt", ["get", "count"]]]]]


def colour_expression(layer: Layer, colour_key: str = "color") -> Any:
    """A colour, or a categorised expression on ``style.by`` from the legend's values."""
    style = layer.style
    default = style.get(colour_key) or style.get("color") or "#3388ff"
    by = style.get("by")
    entries = [e for e in style.get("legend") or [] if e.get("value") is not None]
    if not by or not entries:
        return default
    if all(isinstance(e["value"], bool) for e in entries):
        # `match` labels must be strings or numbers: booleans need `case`.
        expression: list[Any] = ["case"]
        for entry in entries:
            expression += [["==", ["get", by], entry["value"]], entry["color"]]
        return expression + [default]
    expression = ["match", ["get", by]]
    seen: set[Any] = set()
    for entry in entries:
        value = entry["value"]
        if value in seen or isinstance(value, bool):
            continue
        seen.add(value)
        expression += [value, entry["color"]]
    return expression + [default] if seen else default


def _zooms(minzoom: int, maxzoom: int) -> dict[str, int]:
    # A style layer's maxzoom is exclusive; draw up to and including the catalog's maxzoom.
    return {"minzoom": minzoom, "maxzoom": min(24, maxzoom + 1)}


def _meta(layer: Layer) -> dict[str, Any]:
    return {"ioc:layer": layer.id, "ioc:title": {"vi": layer.title_vi, "en": layer.title_en}}


def point_layers(layer: Layer, settings: TileSettings, glyphs: bool) -> list[dict[str, Any]]:
    """Circles for points; for a clustered layer also sized circles for aggregated cells."""
    style, colour = layer.style, colour_expression(layer)
    base = {"source": SOURCE, "source-layer": layer.id, "metadata": _meta(layer)}
    layers: list[dict[str, Any]] = [{
        "id": layer.id, "type": "circle", **base, **_zooms(layer.zoom_min, layer.zoom_max),
        "filter": ["!", ["has", "count"]],
        "paint": {"circle-color": colour, "circle-radius": style.get("radius") or 4,
                  "circle-opacity": style.get("opacity") or 0.9,
                  "circle-stroke-color": "#ffffff", "circle-stroke-width": 1},
    }]
    if is_clustered(layer, settings):
        top = max(layer.zoom_min, min(layer.zoom_max, cluster_max_zoom(layer, settings)))
        layers.append({
            "id": f"{layer.id}-cluster", "type": "circle", **base, **_zooms(layer.zoom_min, top),
            "filter": ["has", "count"],
            "paint": {"circle-color": colour, "circle-radius": CLUSTER_RADIUS,
                      "circle-opacity": 0.75, "circle-stroke-color": "#ffffff",
                      "circle-stroke-width": 1},
        })
        if glyphs:
            layers.append({
                "id": f"{layer.id}-cluster-count", "type": "symbol", **base,
                **_zooms(layer.zoom_min, top), "filter": ["has", "count"],
                "layout": {"text-field": ["to-string", ["get", "count"]], "text-size": 11},
                "paint": {"text-color": "#111111"},
            })
    return layers


def line_layers(layer: Layer) -> list[dict[str, Any]]:
    """One line layer."""
    style = layer.style
    return [{"id": layer.id, "type": "line", "source": SOURCE, "source-layer": layer.id,
             "metadata": _meta(layer), **_zooms(layer.zoom_min, layer.zoom_max),
             "layout": {"line-join": "round", "line-cap": "round"},
             "paint": {"line-color": colour_expression(layer), "line-width": style.get("width") or 1.5,
                       "line-opacity": style.get("opacity") or 1}}]


def polygon_layers(layer: Layer) -> list[dict[str, Any]]:
    """A fill (categorised on ``style.by`` if any) and its outline."""
    style = layer.style
    base = {"source": SOURCE, "source-layer": layer.id, "metadata": _meta(layer),
            **_zooms(layer.zoom_min, layer.zoom_max)}
    return [
        {"id": f"{layer.id}-fill", "type": "fill", **base,
         "paint": {"fill-color": colour_expression(layer, "fill"),
                   "fill-opacity": style.get("opacity") if style.get("opacity") is not None else 0.4}},
        {"id": f"{layer.id}-outline", "type": "line", **base,
         "paint": {"line-color": style.get("color") or "#3388ff",
                   "line-width": style.get("width") or 1}},
    ]


def maplibre_style(layers: Sequence[Layer], tilejson_url: str, settings: TileSettings,
                   glyphs_url: str | None = None) -> dict[str, Any]:
    """A MapLibre style v8 drawing the layers in order (first = bottom)."""
    style_layers: list[dict[str, Any]] = []
    for layer in layers:
        if is_point_layer(layer):
            style_layers += point_layers(layer, settings, glyphs=glyphs_url is not None)
        elif "Line" in layer.geometry_type:
            style_layers += line_layers(layer)
        else:
            style_layers += polygon_layers(layer)
    doc: dict[str, Any] = {
        "version": 8,
        "name": ", ".join(f"{la.title_vi} ({la.title_en})" for la in layers),
        "metadata": {"ioc:layers": [la.id for la in layers]},
        "sources": {SOURCE: {"type": "vector", "url": tilejson_url}},
        "layers": style_layers,
    }
    if glyphs_url:
        doc["glyphs"] = glyphs_url
    return doc
