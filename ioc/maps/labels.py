"""Label points of a layer for the map pages: place names and street names from the city's
own layers (wards, districts, roads), each with the zoom from which it fits on the map.

A polygon is labelled at the centre of its largest inscribed circle (inside the shape, where
the name has most room); a named line is merged with the other pieces of the same name and
labelled at its middle, then at its quarters, eighths … from higher zooms, each anchor with
the line's direction there; a point at itself. The per-label ``minzoom`` comes from the
shape's size in Web Mercator metres — the pixels of a zoom — against the width of the text:
a commune of 200 km² is named from zoom 9, a central ward from 12, a 10 km avenue from 13 and a
200 m lane from 17. Pages pick among these (``ioc/maps/js/ioc-maps.js``, collision handling).

Labels are computed once per layer version and property and kept in memory: a request only
filters them by bbox and zoom.
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ioc.catalog.layers import Layer
from ioc.db.connection import Pool
from ioc.errors import InvalidParameter
from ioc.features.binds import ALIAS, attribute_or_400, column
from ioc.features.items import db_error
from ioc.maps.views import geometry_family

MAX_FEATURES = 200_000  # beyond this a layer is not a label source (1022 reports are not)
DEFAULT_LIMIT = 1000
MAX_LIMIT = 5000
MAX_ZOOM = 22
TEXT_MAX = 80
COLUMNS = ("text", "lon", "lat", "minzoom", "rank", "angle")

# Web Mercator metres per pixel at zoom 0 (256-pixel tiles, at the equator: in EPSG:3857 units
# at every latitude, which is why sizes are measured in 3857).
RES0 = 2 * math.pi * 6378137 / 256
CHAR_PX = 6.5  # mean advance of a 12-13 px sans-serif letter: the server's estimate of widths
PAD_PX = 8
POLYGON_FILL = 0.5  # a polygon is named once its inscribed circle is half the text's width
LINE_FILL = 1.2  # a line once it is 1.2 times the text's length
REPEAT_PX = 400  # a long street is named again every ~400 pixels
MAX_DEPTH = 6  # anchors at 1/2, 1/4 … 1/128 of a line
REPEAT_MIN_M = REPEAT_PX * RES0 / (1 << 18)  # no further anchors than zoom 18 needs
ANGLE_HALF_M = 15.0  # the direction of a line at an anchor: over ±15 m
CACHE_SIZE = 32

# Anchor positions along a line and their depth: 1/2 (0), 1/4 3/4 (1), 1/8 … (2) …
Row = tuple[str, float, float, float, int, int]  # COLUMNS
Box = tuple[float, float, float, float]

_POSITIONS = [
    (k / (1 << (d + 1)), d) for d in range(MAX_DEPTH + 1) for k in range(1, 1 << (d + 1), 2)
]


@dataclass(frozen=True)
class LabelSet:
    """Every label of a layer's property, in the order of their ``minzoom``."""

    layer: Layer
    property: str
    labels: list[Row]

    def select(self, zoom: float, boxes: list[Box], limit: int) -> list[Row]:
        """The ``limit`` largest labels shown at ``zoom`` inside one of ``boxes`` (lon/lat;
        two across the antimeridian, none for all)."""
        # Only the labels that fit at this zoom are looked at: few at the city's zooms.
        shown = self.labels[: bisect_right(self.labels, zoom, key=lambda label: label[3])]
        out = [
            label
            for label in shown
            if not boxes or any(w <= label[1] <= e and s <= label[2] <= n for w, s, e, n in boxes)
        ]
        # Largest first: a page places labels in this order and drops those that collide.
        out.sort(key=lambda label: (-label[4], label[3], label[0]))
        return out[:limit]


def _geom_4326(layer: Layer) -> str:
    geom = column(layer, layer.geometry_column)
    return geom if layer.srid == 4326 else f"ST_Transform({geom}, 4326)"


def _source(layer: Layer, prop: str) -> str:
    """Named, located features in EPSG:4326. Names are composed (NFC): 123 of OSM's street
    names are stored decomposed ('Vĩnh Hội' as i + U+0303 …), which some fonts draw with the
    marks astray, and which would not merge with the same name composed."""
    name = column(layer, prop)
    return (
        f"SELECT left(normalize(btrim({name}::text), NFC), {TEXT_MAX}) AS text,"
        f" {_geom_4326(layer)} AS g"
        f" FROM {layer.table_sql} {ALIAS} WHERE {column(layer, layer.geometry_column)} IS NOT NULL"
        f" AND nullif(btrim({name}::text), '') IS NOT NULL"
    )


def _inside_mercator(g: str) -> str:
    return f"{g} && ST_MakeEnvelope(-180, -85, 180, 85, 4326)"


def polygon_sql(layer: Layer, prop: str) -> str:
    """Centre and diameter (3857 m) of each named polygon's largest inscribed circle."""
    # An invalid shape makes GEOS throw: repaired here, as the tiles do not need to.
    valid = "CASE WHEN ST_IsValid(s.g) THEN s.g ELSE ST_CollectionExtract(ST_MakeValid(s.g), 3) END"
    return (
        "SELECT text, 2 * (c).radius AS size, 0 AS depth, ST_X(p) AS lon, ST_Y(p) AS lat,"
        " NULL::float8 AS bearing FROM ("
        f" SELECT text, ST_MaximumInscribedCircle(ST_Transform({valid}, 3857)) AS c"
        f" FROM ({_source(layer, prop)}) s WHERE {_inside_mercator('s.g')} OFFSET 0) m"
        " CROSS JOIN LATERAL ST_Transform((c).center, 4326) AS p WHERE NOT ST_IsEmpty((c).center)"
    )


def line_sql(layer: Layer, prop: str) -> str:
    """Anchors along each named line, merged with the pieces of the same name: position,
    depth (0 the middle, 1 the quarters …), the line's length (3857 m) and its bearing there.

    Bound: $1 half the window of the bearing (m), $2/$3 positions and depths, $4 the least
    spacing of anchors (m)."""
    return (
        "WITH parts AS ("
        f" SELECT s.text, (ST_Dump(s.g)).geom AS g FROM ({_source(layer, prop)}) s"
        f" WHERE {_inside_mercator('s.g')}"
        "), merged AS ("
        " SELECT text, (ST_Dump(ST_LineMerge(ST_Collect(ST_Transform(g, 3857))))).geom AS g"
        " FROM parts WHERE ST_Dimension(g) = 1 GROUP BY text"
        "), pieces AS ("
        " SELECT text, g, ST_Length(g) AS len FROM merged"
        " WHERE ST_GeometryType(g) = 'ST_LineString' AND ST_Length(g) > 0"
        ")"
        " SELECT p.text, p.len AS size, f.depth, ST_X(a) AS lon, ST_Y(a) AS lat,"
        " degrees(ST_Azimuth(ST_LineInterpolatePoint(p.g, greatest(f.pos - w.d, 0)),"
        " ST_LineInterpolatePoint(p.g, least(f.pos + w.d, 1)))) AS bearing"
        " FROM pieces p CROSS JOIN LATERAL (SELECT least(0.5, $1 / p.len) AS d) w"
        " JOIN unnest($2::float8[], $3::int[]) AS f(pos, depth)"
        " ON f.depth = 0 OR p.len / 2 ^ (f.depth + 1) >= $4"
        " CROSS JOIN LATERAL ST_Transform(ST_LineInterpolatePoint(p.g, f.pos), 4326) AS a"
    )


def point_sql(layer: Layer, prop: str) -> str:
    """Each named point (a multipoint's centroid)."""
    return (
        "SELECT text, NULL::float8 AS size, 0 AS depth, ST_X(p) AS lon, ST_Y(p) AS lat,"
        f" NULL::float8 AS bearing FROM ({_source(layer, prop)}) s"
        " CROSS JOIN LATERAL ST_Centroid(s.g) AS p"
        f" WHERE {_inside_mercator('s.g')} AND NOT ST_IsEmpty(s.g)"
    )


def text_px(text: str) -> float:
    """The estimated width of a label in pixels (the page measures the real one)."""
    return len(text) * CHAR_PX + PAD_PX


def zoom_for(metres: float, pixels: float) -> float:
    """The zoom from which ``metres`` (3857) span at least ``pixels``."""
    if metres <= 0:
        return float(MAX_ZOOM)
    return max(0.0, min(float(MAX_ZOOM), math.log2(RES0 * pixels / metres)))


def screen_angle(bearing: float | None) -> int:
    """A line's bearing (clockwise from north) as the text's rotation (clockwise from the
    x axis), turned so that the text never reads upside down: -90 ≤ angle < 90."""
    if bearing is None:
        return 0
    angle = round((bearing - 90.0) % 180.0) % 180  # rounded first: 89.6° is -90°, not 90°
    return angle - 180 if angle >= 90 else angle


def minzoom(family: str, text: str, size: float | None, depth: int) -> float:
    """The zoom from which a label fits (1 decimal)."""
    if family == "point" or size is None:
        return 0.0
    if family == "polygon":
        return round(zoom_for(size, POLYGON_FILL * text_px(text)), 1)
    first = zoom_for(size, LINE_FILL * text_px(text))
    # Anchors of depth d are len / 2^(d+1) apart: shown once that is REPEAT_PX on screen.
    again = zoom_for(size / (1 << (depth + 1)), REPEAT_PX) if depth else 0.0
    return round(max(first, again), 1)


def label_property(layer: Layer, prop: str) -> str:
    """The attribute that names the layer's features; 400 when unknown or the layer is too
    big to label."""
    attribute = attribute_or_400(layer, prop, "property")
    if layer.feature_count > MAX_FEATURES:
        raise InvalidParameter(
            f"Collection '{layer.id}' has {layer.feature_count:,} features, more than the "
            f"{MAX_FEATURES:,} a label source may have.",
            parameter="collectionId",
        )
    return attribute.name


async def compute_labels(pool: Pool, layer: Layer, prop: str) -> LabelSet:
    """Every label of the layer (no cache: see :func:`get_labels`)."""
    family = geometry_family(layer)
    args: list[Any] = []
    if family == "polygon":
        sql = polygon_sql(layer, prop)
    elif family == "line":
        sql = line_sql(layer, prop)
        positions, depths = zip(*_POSITIONS, strict=True)
        args = [ANGLE_HALF_M, list(positions), list(depths), REPEAT_MIN_M]
    else:
        sql = point_sql(layer, prop)
    try:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            rows = await conn.fetch(sql, *args)
    except asyncpg.PostgresError as exc:
        raise db_error(exc) from exc
    labels = [
        (
            r["text"],
            round(r["lon"], 6),
            round(r["lat"], 6),
            minzoom(family, r["text"], r["size"], r["depth"]),
            round(r["size"] or 0),
            screen_angle(r["bearing"]) if family == "line" else 0,
        )
        for r in rows
    ]
    labels.sort(key=lambda label: (label[3], -label[4], label[0]))
    return LabelSet(layer, prop, labels)


_cache: OrderedDict[tuple[str, int, datetime | None, str], LabelSet] = OrderedDict()
_locks: dict[tuple[str, int, datetime | None, str], asyncio.Lock] = {}


async def get_labels(pool: Pool, layer: Layer, prop: str) -> LabelSet:
    """The layer's labels, computed once per layer version (a write or publish makes a new
    one) and kept for the next requests; concurrent first requests compute them once."""
    key = (layer.id, layer.version, layer.updated_at, prop)
    found = _cache.get(key)
    if found is not None:
        _cache.move_to_end(key)
        return found
    lock = _locks.setdefault(key, asyncio.Lock())
    async with lock:
        found = _cache.get(key)
        if found is None:
            found = await compute_labels(pool, layer, prop)
            _cache[key] = found
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
        _locks.pop(key, None)
    return found


def labels_document(labels: LabelSet, zoom: float, boxes: list[Box], limit: int) -> dict[str, Any]:
    """The JSON answer: one compact row per label, largest first."""
    rows = labels.select(zoom, boxes, limit)
    return {
        "layer": labels.layer.id,
        "version": labels.layer.version,
        "property": labels.property,
        "zoom": zoom,
        "numberOfLabels": len(rows),
        "columns": list(COLUMNS),
        "labels": [list(r) for r in rows],
    }
