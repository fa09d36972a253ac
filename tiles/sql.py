# ruff: noqa: S608 — this module builds SQL text on purpose: every identifier goes through
# ioc.db.identifiers.quote_ident, every name literal through literal(), numbers come from validated
# settings, and the only values that vary per request (z, x, y) are bound parameters.
"""Tile SQL: the one place where vector-tile queries are written.

One statement renders one tile of one or several layers: each layer's ``ST_AsMVT`` bytea is
concatenated with ``||`` (an MVT is a sequence of layer messages, so concatenation is a valid
multi-layer tile). Only z, x, y are bound ($1, $2, $3); the text of a statement depends only on
the layers, their versions and the mode of each (features or aggregated points), so it is built
once and asyncpg prepares it once per connection.

Every value that depends on the tile is derived in SQL from ``ST_TileEnvelope`` in the ``b``
(bounds) CTE; identifiers come from the catalog and are quoted by :mod:`ioc.db.identifiers`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ioc.catalog.layers import Attribute, Layer
from ioc.db.identifiers import quote_ident
from ioc.db.tables import PG_TYPES
from tiles.settings import TileSettings

Mode = Literal["features", "cluster"]
POINT_TYPES = frozenset({"Point", "MultiPoint"})
POLYGON_TYPES = frozenset({"Polygon", "MultiPolygon"})
# The property of a block (merged small polygons, sql/0022) and of a cluster: its members.
COUNT = "count"
# Attribute names that read as a feature's label, by preference.
LABEL_ATTRIBUTES = ("name", "name_vi", "ten", "ten_vi", "label", "title")
# Tiles are drawn 256 px wide: "a pixel" below is 1/256 of the tile's width.
TILE_PX = 256
# Merged small polygons are drawn as one block per cell of this many pixels (sql/0022).
BLOCK_PX = 16
# Web Mercator (EPSG:3857) sphere radius and the latitude where the square world ends.
EARTH_RADIUS = 6378137.0
MAX_LAT = 85.0511287798066
# Around a projected layer's extent, the region (degrees) where its CRS is trusted: a tile
# envelope is clipped to it before ST_Transform, because projecting a low-zoom envelope that
# spans half the globe into a 3°-wide Transverse Mercator zone (VN-2000, EPSG:9210) gives
# garbage (a sliver at z0), which would silently drop features.
PROJECTED_GUARD_DEG = 2.0


@dataclass(frozen=True)
class Property:
    """One attribute carried in tiles, with its SQL expression over the table alias ``t``."""

    name: str
    type: str
    sql: str


@dataclass(frozen=True)
class Plan:
    """One layer of a tile: the layer and how it is rendered at the tile's zoom."""

    layer: Layer
    mode: Mode
    # MVT feature ids are unsigned integers: a text or uuid key is carried as a property.
    integer_id: bool = True


def literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings is on since PostgreSQL 9.1)."""
    if "\x00" in text:
        raise ValueError("NUL in SQL literal")
    return "'" + text.replace("'", "''") + "'"


def tile_options(layer: Layer) -> dict:
    """The manifest's optional ``tiles`` block (cluster, cluster_max_zoom, properties)."""
    options = layer.manifest.get("tiles") if layer.manifest else None
    return options if isinstance(options, dict) else {}


def is_point_layer(layer: Layer) -> bool:
    return layer.geometry_type in POINT_TYPES


def is_clustered(layer: Layer, settings: TileSettings) -> bool:
    """True when the layer's points are aggregated at low zoom (manifest flag or size)."""
    if not is_point_layer(layer):
        return False
    flag = tile_options(layer).get("cluster")
    if flag is not None:
        return bool(flag)
    return layer.feature_count > settings.cluster_threshold


def merge_px(layer: Layer, settings: TileSettings) -> float:
    """Below how many pixels a visible polygon is drawn merged into its cell's block at the
    generalised zooms (sql/0022): ``IOC_TILE_MERGE_PX`` for a polygon layer whose manifest says
    ``tiles: {merge: true}``, else 0. The build (ioc.tile_lowzoom_build) decides the same way."""
    if layer.geometry_type not in POLYGON_TYPES or tile_options(layer).get("merge") is not True:
        return 0.0
    return settings.merge_px


def cluster_max_zoom(layer: Layer, settings: TileSettings) -> int:
    """Highest zoom at which a clustered layer is aggregated."""
    value = tile_options(layer).get("cluster_max_zoom", settings.cluster_max_zoom)
    return int(value)


def layer_mode(layer: Layer, z: int, settings: TileSettings) -> Mode | None:
    """How the layer is drawn at zoom z; None outside its zoom range (or with no extent)."""
    if z < layer.zoom_min or z > layer.zoom_max or layer.extent is None:
        return None
    if is_clustered(layer, settings) and z <= cluster_max_zoom(layer, settings):
        return "cluster"
    return "features"


def plan_tile(layers: Sequence[Layer], z: int, settings: TileSettings) -> list[Plan]:
    """The layers that contribute to a tile at zoom z, in request order."""
    plans = []
    for layer in layers:
        mode = layer_mode(layer, z, settings)
        if mode is not None:
            plans.append(Plan(layer, mode))
    return plans


def _value_sql(attribute: Attribute) -> str:
    column = f"t.{quote_ident(attribute.name)}"
    if attribute.type in ("date", "timestamp"):
        # ISO 8601 text that JavaScript's Date parses; ST_AsMVT would otherwise use the type's
        # output function, whose format depends on the session's DateStyle.
        return f"to_json({column}) #>> '{{}}'"
    return column


def _mvt_type(attribute_type: str) -> str:
    return {"integer": "Number", "number": "Number", "boolean": "Boolean"}.get(
        attribute_type, "String"
    )


def tile_properties(layer: Layer) -> list[Property]:
    """Attributes a tile carries: the id attribute, style.by, a label and the time attribute.

    Only what the layer's style needs, to keep tiles small; a manifest may add more with
    ``tiles: {properties: [...]}``. Names are catalog attributes only.
    """
    label = next((name for name in LABEL_ATTRIBUTES if layer.attribute(name)), None)
    wanted = [layer.id_attribute, layer.style.get("by"), label, layer.time_column]
    wanted += list(tile_options(layer).get("properties") or [])
    props: list[Property] = []
    seen = {layer.id_column}
    for name in wanted:
        attribute = layer.attribute(name) if name else None
        if attribute is None or name in seen:
            continue
        seen.add(attribute.name)
        props.append(Property(attribute.name, _mvt_type(attribute.type), _value_sql(attribute)))
    return props


def vector_fields(layer: Layer, mode: Mode | None = None, merged: bool = False) -> dict[str, str]:
    """TileJSON ``fields`` of a layer: name → Number/String/Boolean (``count`` for clusters and
    for the blocks of merged polygons)."""
    fields = {p.name: p.type for p in tile_properties(layer)}
    if merged or mode == "cluster" or (mode is None and layer.geometry_type in POINT_TYPES):
        fields.setdefault(COUNT, "Number")
    return fields


def mercator_box(extent: tuple[float, float, float, float], margin_deg: float) -> str:
    """SQL for a 3857 envelope around a WGS 84 extent, widened by ``margin_deg``."""
    west, south, east, north = extent
    west, east = max(west - margin_deg, -180.0), min(east + margin_deg, 180.0)
    south, north = max(south - margin_deg, -MAX_LAT), min(north + margin_deg, MAX_LAT)

    def x(lon: float) -> float:
        return EARTH_RADIUS * math.radians(lon)

    def y(lat: float) -> float:
        return EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

    return f"ST_MakeEnvelope({x(west)!r}, {y(south)!r}, {x(east)!r}, {y(north)!r}, 3857)"


def _buffered(settings: TileSettings) -> str:
    """SQL for the tile's EPSG:3857 envelope grown by the MVT buffer."""
    return f"ST_Expand(e.env, (ST_XMax(e.env) - ST_XMin(e.env)) * {settings.buffer / settings.extent!r})"


def _bounds_columns(n: int, layer: Layer, settings: TileSettings) -> list[str]:
    """Per-layer columns of the bounds CTE: the filter box and the pixel size in its SRID."""
    buffered = _buffered(settings)
    if layer.srid == 3857:
        box, plain = buffered, "e.env"
    elif layer.srid == 4326:
        # 3857 → 4326 maps x to longitude and y to latitude independently, so an envelope stays
        # an exact rectangle at every zoom.
        box, plain = f"ST_Transform({buffered}, 4326)", "ST_Transform(e.env, 4326)"
    else:
        guard = mercator_box(layer.extent or (0, 0, 0, 0), PROJECTED_GUARD_DEG)
        box = f"ST_Transform(ST_ClipByBox2D({buffered}, Box2D({guard})), {layer.srid})"
        plain = f"ST_Transform(ST_ClipByBox2D(e.env, Box2D({guard})), {layer.srid})"
    # A tile that misses the guard clips to an empty polygon: its && matches nothing.
    px = f"(ST_XMax({plain}) - ST_XMin({plain})) / {TILE_PX}"
    return [f"{box} AS f{n}", f"{px} AS px{n}"]


def _geometry_sql(n: int, layer: Layer, settings: TileSettings) -> str:
    """The layer's geometry, generalised for the zoom, in EPSG:3857 tile coordinates."""
    geom = f"t.{quote_ident(layer.geometry_column)}"
    if not is_point_layer(layer):
        # Cut huge features to the (buffered) tile in their own SRID first, so a city-sized
        # polygon is not transformed and simplified whole for every z16 tile; then simplify by
        # a fraction of a pixel (ST_AsMVTGeom only snaps to its grid). ST_AsMVTGeom clips
        # exactly and repairs what ST_ClipByBox2D and ST_Simplify may leave invalid.
        geom = (
            f"CASE WHEN {geom} @ b.f{n} THEN {geom} ELSE ST_ClipByBox2D({geom}, Box2D(b.f{n})) END"
        )
        if settings.simplify_px > 0:
            geom = f"ST_Simplify({geom}, b.px{n} * {settings.simplify_px!r}, true)"
    if layer.srid != 3857:
        geom = f"ST_Transform({geom}, 3857)"
    return f"ST_AsMVTGeom({geom}, b.env, {settings.extent}, {settings.buffer}, true)"


def _features_cte(n: int, plan: Plan, settings: TileSettings) -> str:
    """Features of one layer in the tile, at most max_features + 1 (the +1 detects the cap)."""
    layer = plan.layer
    geom = f"t.{quote_ident(layer.geometry_column)}"
    properties = tile_properties(layer)
    columns = [f"t.{quote_ident(layer.id_column)} AS {quote_ident(layer.id_column)}"]
    columns += [f"{p.sql} AS {quote_ident(p.name)}" for p in properties]
    generalised = not is_point_layer(layer) and plan.integer_id
    merge = merge_px(layer, settings) if generalised else 0.0
    if merge > 0 and all(p.name != COUNT for p in properties):
        columns.append(f"NULL::int AS {COUNT}")  # a block's members; none for a shape
    where = f"{geom} && b.f{n}"
    if not is_point_layer(layer) and settings.min_feature_px > 0:
        # Drop sub-pixel lines and polygons before any geometry work: at low zoom they are
        # most of a layer's rows and would collapse to nothing (or a speck) anyway.
        size = f"b.px{n} * {settings.min_feature_px!r}"
        where += (
            f" AND (ST_XMax({geom}) - ST_XMin({geom}) >= {size}"
            f" OR ST_YMax({geom}) - ST_YMin({geom}) >= {size})"
        )
    rows = (
        f"SELECT {', '.join(columns)}, {_geometry_sql(n, layer, settings)} AS geom"
        f" FROM {layer.table_sql} t, b WHERE {where}"
    )
    gate = ""
    if generalised:
        blocks = _blocks_rows(n, layer, properties, settings) if merge > 0 else None
        rows = _generalised_rows(n, layer, columns, settings, rows, blocks)
        checks = [
            f"m.visible_px = {settings.visible_px!r}",
            f"m.simplify_px = {settings.simplify_px!r}",
            f"m.merge_px = {merge!r}",
            f"$1 <= {settings.generalise_max_zoom}",
        ]
        if merge > 0:  # the blocks' category was built from style.by
            by = layer.attribute(layer.style.get("by") or "")
            checks.append(f"m.category IS NOT DISTINCT FROM {literal(by.name) if by else 'NULL'}")
        needed = ", ".join(literal(p.name) for p in properties)
        props = f"m.properties @> ARRAY[{needed}]::text[]"
        gate = f"{_lowzoom_gate(n, layer, 'shapes', checks, props)}, "
    else:
        rows += " OFFSET 0"
    # OFFSET 0 keeps the IS NOT NULL filter below from being pushed into the scans, where it
    # would evaluate ST_AsMVTGeom a second time per row (a dense z12 tile: ~7,000 rows).
    return (
        f"{gate}l{n} AS MATERIALIZED (SELECT * FROM ({rows}) s"
        f" WHERE s.geom IS NOT NULL LIMIT {settings.max_features + 1})"
    )


def _blocks_rows(n: int, layer: Layer, properties: list[Property], settings: TileSettings) -> str:
    """The blocks of merged small polygons (ioc.tile_blocks, sql/0022) in the tile, in the
    columns of its features: no id, the members' count, their dominant style.by value, the
    other properties NULL (a merged feature's own attributes are not drawn at this zoom)."""
    by = layer.attribute(layer.style.get("by") or "")
    values = [f"NULL AS {quote_ident(layer.id_column)}"]
    for p in properties:
        if by is not None and p.name == by.name:
            # Stored as text; back in the column's type, as the shapes carry it (a date or
            # timestamp is carried as its ISO text).
            cast = "" if by.type in ("date", "timestamp") else f"::{PG_TYPES.get(by.type, 'text')}"
            values.append(f"k.c{cast} AS {quote_ident(p.name)}")
        elif p.name == COUNT:
            values.append(f"k.n AS {quote_ident(p.name)}")
        else:
            values.append(f"NULL AS {quote_ident(p.name)}")
    if all(p.name != COUNT for p in properties):
        values.append(f"k.n AS {COUNT}")
    mvt_geom = f"ST_AsMVTGeom(k.geom, b.env, {settings.extent}, {settings.buffer}, true) AS geom"
    return (
        f"SELECT {', '.join([*values, mvt_geom])} FROM b, ioc.tile_blocks k"
        f" WHERE k.layer_id = {literal(layer.id)} AND k.z = $1::smallint AND k.geom && b.fm"
        f" AND (SELECT ok FROM g{n})"
    )


def _generalised_rows(
    n: int,
    layer: Layer,
    columns: list[str],
    settings: TileSettings,
    rows: str,
    blocks: str | None = None,
) -> str:
    """Generalised zooms read the visible features' pre-simplified EPSG:3857 shapes
    (ioc.tile_shapes, sql/0012) with the attributes stored beside them (props, sql/0019), read
    back in the columns' own types; where the stored props lack a column this statement
    carries, the attributes come from the rows (a join on the integer id: a heap page per
    feature); where the shapes were not built for these settings, everything does."""
    mvt_geom = f"ST_AsMVTGeom(s.geom, b.env, {settings.extent}, {settings.buffer}, true) AS geom"
    where = f"WHERE s.layer_id = {literal(layer.id)} AND s.z = $1::smallint AND s.geom && b.fm"
    id_column = quote_ident(layer.id_column)
    stored = (
        f"SELECT s.fid AS {id_column}, {', '.join([*columns[1:], mvt_geom])}"
        f" FROM b, ioc.tile_shapes s"
        f" CROSS JOIN LATERAL jsonb_populate_record(NULL::{layer.table_sql}, s.props) t"
        f" {where} AND (SELECT ok AND props FROM g{n})"
    )
    joined = (
        f"SELECT {', '.join([*columns, mvt_geom])} FROM b, ioc.tile_shapes s"
        f" JOIN {layer.table_sql} t ON t.{id_column} = s.fid"
        f" {where} AND (SELECT ok AND NOT props FROM g{n})"
    )
    merged = f" UNION ALL ({blocks} OFFSET 0)" if blocks else ""
    return (
        f"({stored} OFFSET 0) UNION ALL ({joined} OFFSET 0)"
        f" UNION ALL ({rows} AND NOT (SELECT ok FROM g{n}) OFFSET 0){merged}"
    )


def _mercator_xy(layer: Layer) -> tuple[str, str]:
    """SQL for a point's EPSG:3857 x and y. For WGS 84 it is plain arithmetic on the sphere
    (what PROJ does for 3857), several times cheaper per row than ST_Transform."""
    geom = f"t.{quote_ident(layer.geometry_column)}"
    point = f"ST_Centroid({geom})" if layer.geometry_type == "MultiPoint" else geom
    if layer.srid == 4326:
        return (
            f"{EARTH_RADIUS!r} * radians(ST_X({point}))",
            f"{EARTH_RADIUS!r} * ln(tan(pi() / 4 + radians(ST_Y({point})) / 2))",
        )
    if layer.srid != 3857:
        point = f"ST_Transform({point}, 3857)"
    return f"ST_X({point})", f"ST_Y({point})"


def _lowzoom_gate(
    n: int, layer: Layer, kind: str, checks: Sequence[str], props: str = "false"
) -> str:
    """CTE ``g{n}``: ``ok`` is true when the layer's low-zoom rows (sql/0012) serve this zoom,
    i.e. were built for the live table with these settings; ``props`` when the stored shapes
    also hold the attributes this statement needs (the ``props`` SQL over ``m``). Each branch
    that reads them, or the rows, filters on it; a filter without columns is a one-time
    filter, so the branches not taken cost nothing."""
    where = " AND ".join(
        [
            f"m.layer_id = {literal(layer.id)}",
            f"m.kind = {literal(kind)}",
            f"m.relid = to_regclass({literal(layer.table_sql)})",
            "$1 BETWEEN m.min_zoom AND m.max_zoom",
            *checks,
        ]
    )
    # At most one row (layer_id is the key): no row is not ok.
    return (
        f"g{n} AS (SELECT count(*) > 0 AS ok, coalesce(bool_or({props}), false) AS props"
        f" FROM ioc.tile_lowzoom m WHERE {where})"
    )


def _cluster_cte(n: int, layer: Layer, settings: TileSettings) -> str:
    """Points aggregated on a grid aligned with the tile: count and dominant category per cell.

    Each point is counted in exactly one cell of exactly one tile (half-open tile bounds in
    EPSG:3857), so the counts of a zoom level sum to the layer's feature count. The cells are
    read from ``ioc.tile_cells`` (kept by triggers) when built; otherwise computed from the
    rows: two hash aggregations (per cell and category, then per cell) beat one sort for
    ``mode()``.
    """
    geom = f"t.{quote_ident(layer.geometry_column)}"
    x, y = _mercator_xy(layer)
    by = layer.attribute(layer.style.get("by") or "")
    category = f"t.{quote_ident(by.name)}" if by else "NULL::text"
    # The stored category is text: cast back to the attribute's type (tile values and the
    # tie-break order stay those of the column).
    stored = f"c.c::{PG_TYPES.get(by.type, 'text')}" if by else "NULL::text"
    # OFFSET 0 keeps the planner from inlining px/py into every place they are used (it would
    # compute the projection up to eight times per row).
    points = (
        f"SELECT {x} AS px, {y} AS py, {category} AS c FROM {layer.table_sql} t, b"
        f" WHERE {geom} && b.f{n} AND NOT (SELECT ok FROM g{n}) OFFSET 0"
    )
    checks = [
        f"m.grid = {settings.cluster_grid}",
        f"m.category IS NOT DISTINCT FROM {literal(by.name) if by else 'NULL'}",
    ]
    cells = (
        f"{_lowzoom_gate(n, layer, 'points', checks)},"
        f" l{n}c AS (SELECT c.i, c.j, {stored} AS c, c.n, c.sx, c.sy FROM ioc.tile_cells c"
        f" WHERE c.layer_id = {literal(layer.id)} AND c.z = $1 AND c.x = $2 AND c.y = $3"
        f" AND (SELECT ok FROM g{n})"
        f" UNION ALL SELECT floor((s.px - b.xmin) / b.cell) AS i,"
        f" floor((b.ymax - s.py) / b.cell) AS j, s.c, count(*) AS n, sum(s.px) AS sx,"
        f" sum(s.py) AS sy FROM b, ({points}) s"
        f" WHERE s.px >= b.xmin AND s.px < b.xmax AND s.py > b.ymin AND s.py <= b.ymax"
        f" GROUP BY 1, 2, 3)"
    )
    by_column = f", (array_agg(c ORDER BY n DESC, c))[1] AS {quote_ident(by.name)}" if by else ""
    by_outer = f", a.{quote_ident(by.name)}" if by else ""
    return (
        f"{cells}, l{n} AS (SELECT a.count{by_outer}, ST_AsMVTGeom(ST_SetSRID(ST_MakePoint("
        f"a.cx, a.cy), 3857), b.env, {settings.extent}, 0, false) AS geom FROM b, ("
        f"SELECT sum(n)::int AS count{by_column}, sum(sx) / sum(n) AS cx, sum(sy) / sum(n) AS cy"
        f" FROM l{n}c GROUP BY i, j) a)"
    )


def build_tile_sql(plans: Sequence[Plan], settings: TileSettings) -> str:
    """One statement for a tile of several layers: returns ``mvt`` bytea and ``truncated``.

    ``truncated`` is a boolean array, one per layer in order: true when the layer had more than
    max_features features in the tile (only the first max_features are in ``mvt``).
    """
    if not plans:
        raise ValueError("a tile needs at least one layer")
    bounds = [
        "e.env",
        "ST_XMin(e.env) AS xmin",
        "ST_YMin(e.env) AS ymin",
        "ST_XMax(e.env) AS xmax",
        "ST_YMax(e.env) AS ymax",
        f"(ST_XMax(e.env) - ST_XMin(e.env)) / {settings.cluster_grid} AS cell",
        f"{_buffered(settings)} AS fm",
    ]
    ctes, parts, flags = [], [], []
    cap = settings.max_features
    for n, plan in enumerate(plans):
        layer = plan.layer
        bounds += _bounds_columns(n, layer, settings)
        name = literal(layer.id)
        if plan.mode == "cluster":
            ctes.append(_cluster_cte(n, layer, settings))
            parts.append(
                f"COALESCE((SELECT ST_AsMVT(q, {name}, {settings.extent}, 'geom')"
                f" FROM l{n} q WHERE q.geom IS NOT NULL), ''::bytea)"
            )
            flags.append("false")
        else:
            ctes.append(_features_cte(n, plan, settings))
            id_name = f", {literal(layer.id_column)}" if plan.integer_id else ""
            parts.append(
                f"COALESCE((SELECT ST_AsMVT(q, {name}, {settings.extent}, 'geom'"
                f"{id_name}) FROM (SELECT * FROM l{n} LIMIT {cap}) q), ''::bytea)"
            )
            flags.append(f"(SELECT count(*) FROM l{n}) > {cap}")
    head = (
        f"WITH b AS (SELECT {', '.join(bounds)} FROM (SELECT ST_TileEnvelope($1, $2, $3) AS env) e)"
    )
    return (
        f"{head}, {', '.join(ctes)} SELECT {' || '.join(parts)} AS mvt,"
        f" ARRAY[{', '.join(flags)}]::boolean[] AS truncated"
    )


def plan_key(plans: Sequence[Plan]) -> tuple[tuple[str, int, str, bool], ...]:
    """What a statement's text depends on: each layer's id, version and mode, in order."""
    return tuple((p.layer.id, p.layer.version, p.mode, p.integer_id) for p in plans)


ID_TYPE_SQL = """
SELECT format_type(a.atttypid, NULL) IN ('smallint', 'integer', 'bigint')
FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = $2
"""


def id_type_args(layer: Layer) -> tuple[str, str]:
    """Arguments of ID_TYPE_SQL for a layer: is its id column an integer?"""
    return layer.table_sql, layer.id_column


class TileSQL:
    """Statement text per (layers, versions, modes), built once and reused.

    Reusing the identical text lets asyncpg's per-connection statement cache prepare each
    statement once; a publish bumps the version, which makes a new key (and new text).
    """

    MAX_ENTRIES = 4096

    def __init__(self, settings: TileSettings) -> None:
        self.settings = settings
        self._texts: dict[tuple, str] = {}

    def get(self, plans: Sequence[Plan]) -> str:
        """The statement for these plans (built on first use)."""
        key = plan_key(plans)
        text = self._texts.get(key)
        if text is None:
            if len(self._texts) >= self.MAX_ENTRIES:
                self._texts.clear()  # stale versions pile up over months; rebuilding is cheap
            text = self._texts[key] = build_tile_sql(plans, self.settings)
        return text
