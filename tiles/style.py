"""MapLibre GL style (spec v8) for a set of catalog layers, built from their catalog styles.

Self-contained: one vector source (this server's TileJSON), no basemap, no sprite and no glyphs,
so a map works without the internet. Text labels need glyphs; they are added only when the
caller passes a glyphs URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ioc.catalog.layers import Layer
from tiles.settings import TileSettings
from tiles.sql import cluster_max_zoom, is_clustered, is_point_layer

SOURCE = "ioc"
# A cluster circle grows with the square root of its count (area ∝ count), within bounds.
CLUSTER_RADIUS = ["min", 28, ["+", 4, ["*", 0.9, ["sqrt", ["get", "count"]]]]]


def _categories(layer: Layer) -> tuple[str | None, list[tuple[Any, str]]]:
    """``style.by`` and the legend's (value, colour) pairs, first entry of a value only."""
    by = layer.style.get("by")
    pairs: list[tuple[Any, str]] = []
    for entry in layer.style.get("legend") or []:
        value = entry.get("value")
        # True == 1 in Python: compare with the type so a flag and a number stay distinct.
        if value is not None and not any(v == value and type(v) is type(value) for v, _ in pairs):
            pairs.append((value, entry["color"]))
    return (by, pairs) if by and pairs else (None, [])


def _default(layer: Layer, colour_key: str) -> str:
    return layer.style.get(colour_key) or layer.style.get("color") or "#3388ff"


def colour_expression(layer: Layer, colour_key: str = "color") -> Any:
    """A colour, or a ``match`` on ``style.by`` from the legend's values; None when the legend
    has booleans (neither a ``match`` label nor, in QGIS 3.22, a ``case``: see
    :func:`colour_layers`).

    Each label is written as a one-value array: MapLibre reads both forms, but QGIS 3.22's
    converter reads only arrays (a bare label becomes ``IN ()`` and every feature gets the
    fallback colour)."""
    by, pairs = _categories(layer)
    if not pairs:
        return _default(layer, colour_key)
    if any(isinstance(value, bool) for value, _ in pairs):
        return None
    expression: list[Any] = ["match", ["get", by]]
    for value, colour in pairs:
        expression += [[value], colour]
    return expression + [_default(layer, colour_key)]


def colour_layers(
    layer: Layer,
    style_layer: dict[str, Any],
    colour_property: str,
    colour_key: str = "color",
    split: bool = False,
) -> list[dict[str, Any]]:
    """``style_layer`` coloured as the legend says: one layer with a ``match`` colour, or, with
    ``split`` or a legend of booleans, one layer per legend value (filtered with ``==``) over a
    layer for the other values.

    Split layers are what QGIS 3.22 draws: its converter drops a data-driven ``circle-color``
    silently and has no ``case``. The first legend entry is drawn on top."""
    by, pairs = _categories(layer)
    expression = colour_expression(layer, colour_key)  # a plain colour without a legend
    if expression is not None and not (split and pairs):
        return [{**style_layer, "paint": {colour_property: expression, **style_layer["paint"]}}]
    base = style_layer.get("filter")
    # `!=` per value rather than `match … false true`: booleans cannot be `match` labels.
    others = ["all", *(["!=", ["get", by], value] for value, _ in pairs)]
    rules = [(others, _default(layer, colour_key), "")]
    rules += [
        (["==", ["get", by], value], colour, f"-{n}")
        for n, (value, colour) in reversed(list(enumerate(pairs, 1)))
    ]
    return [
        {
            **style_layer,
            "id": style_layer["id"] + suffix,
            "filter": ["all", base, rule] if base else rule,
            "paint": {colour_property: colour, **style_layer["paint"]},
        }
        for rule, colour, suffix in rules
    ]


def _zooms(minzoom: int, maxzoom: int) -> dict[str, int]:
    # A style layer's maxzoom is exclusive; draw up to and including the catalog's maxzoom.
    return {"minzoom": minzoom, "maxzoom": min(24, maxzoom + 1)}


def _meta(layer: Layer) -> dict[str, Any]:
    return {"ioc:layer": layer.id, "ioc:title": {"vi": layer.title_vi, "en": layer.title_en}}


def point_layers(layer: Layer, settings: TileSettings, glyphs: bool) -> list[dict[str, Any]]:
    """Circles for points, one layer per legend value; for a clustered layer also sized
    circles for aggregated cells (coloured by their dominant value)."""
    style = layer.style
    base = {"source": SOURCE, "source-layer": layer.id, "metadata": _meta(layer)}
    layers = colour_layers(
        layer,
        {
            "id": layer.id,
            "type": "circle",
            **base,
            **_zooms(layer.zoom_min, layer.zoom_max),
            "filter": ["!", ["has", "count"]],
            "paint": {
                "circle-radius": style.get("radius") or 4,
                "circle-opacity": style.get("opacity") or 0.9,
                "circle-stroke-color": "#ffffff",
                "circle-stroke-width": 1,
            },
        },
        "circle-color",
        split=True,
    )
    if is_clustered(layer, settings):
        top = max(layer.zoom_min, min(layer.zoom_max, cluster_max_zoom(layer, settings)))
        # QGIS 3.22 cannot read the radius expression and draws its default marker size.
        layers += colour_layers(
            layer,
            {
                "id": f"{layer.id}-cluster",
                "type": "circle",
                **base,
                **_zooms(layer.zoom_min, top),
                "filter": ["has", "count"],
                "paint": {
                    "circle-radius": CLUSTER_RADIUS,
                    "circle-opacity": 0.75,
                    "circle-stroke-color": "#ffffff",
                    "circle-stroke-width": 1,
                },
            },
            "circle-color",
            split=True,
        )
        if glyphs:
            layers.append(
                {
                    "id": f"{layer.id}-cluster-count",
                    "type": "symbol",
                    **base,
                    **_zooms(layer.zoom_min, top),
                    "filter": ["has", "count"],
                    "layout": {"text-field": ["to-string", ["get", "count"]], "text-size": 11},
                    "paint": {"text-color": "#111111"},
                }
            )
    return layers


def line_layers(layer: Layer) -> list[dict[str, Any]]:
    """A line layer (split by legend value only for a legend of booleans)."""
    style = layer.style
    return colour_layers(
        layer,
        {
            "id": layer.id,
            "type": "line",
            "source": SOURCE,
            "source-layer": layer.id,
            "metadata": _meta(layer),
            **_zooms(layer.zoom_min, layer.zoom_max),
            "layout": {"line-join": "round", "line-cap": "round"},
            "paint": {
                "line-width": style.get("width") or 1.5,
                "line-opacity": style.get("opacity") or 1,
            },
        },
        "line-color",
    )


def polygon_layers(layer: Layer) -> list[dict[str, Any]]:
    """A fill (categorised on ``style.by`` if any) and its outline."""
    style = layer.style
    base = {
        "source": SOURCE,
        "source-layer": layer.id,
        "metadata": _meta(layer),
        **_zooms(layer.zoom_min, layer.zoom_max),
    }
    opacity = style.get("opacity") if style.get("opacity") is not None else 0.4
    return [
        *colour_layers(
            layer,
            {"id": f"{layer.id}-fill", "type": "fill", **base, "paint": {"fill-opacity": opacity}},
            "fill-color",
            "fill",
        ),
        {
            "id": f"{layer.id}-outline",
            "type": "line",
            **base,
            "paint": {
                "line-color": style.get("color") or "#3388ff",
                "line-width": style.get("width") or 1,
            },
        },
    ]


def maplibre_style(
    layers: Sequence[Layer],
    tilejson_url: str,
    settings: TileSettings,
    glyphs_url: str | None = None,
) -> dict[str, Any]:
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
