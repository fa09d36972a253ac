"""Translating a parsed CQL2 filter (pygeofilter's AST, from :func:`ioc.features.cql2.parse_filter`)
to SQL: every property is a catalog attribute quoted by ``quote_ident``, every literal a bound
parameter (``$n`` with a cast from the attribute's type); anything not translated is a 400 naming
the ``filter`` parameter. Spatial operators filter first with the geometry index (``&&``).
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import shapely
from pygeofilter import ast, values
from shapely.geometry import box, shape
from shapely.validation import explain_validity

from ioc.catalog.layers import Layer
from ioc.errors import InvalidParameter
from ioc.features import crs as crsmod
from ioc.features.binds import Binds, attribute_or_400, coerce, column, typed_column
from ioc.features.cql2 import GEOMETRY_NAME, TimeIntersects

_COMPARISONS = {
    ast.Equal: "=",
    ast.NotEqual: "<>",
    ast.LessThan: "<",
    ast.LessEqual: "<=",
    ast.GreaterThan: ">",
    ast.GreaterEqual: ">=",
}
_SPATIAL = {
    ast.GeometryIntersects: "ST_Intersects",
    ast.GeometryDisjoint: "ST_Disjoint",
    ast.GeometryContains: "ST_Contains",
    ast.GeometryWithin: "ST_Within",
    ast.GeometryTouches: "ST_Touches",
    ast.GeometryCrosses: "ST_Crosses",
    ast.GeometryOverlaps: "ST_Overlaps",
    ast.GeometryEquals: "ST_Equals",
}
_FAMILY = {
    "integer": "number",
    "number": "number",
    "text": "text",
    "boolean": "boolean",
    "date": "time",
    "timestamp": "time",
}
_UNITS = {
    "m": 1.0,
    "meter": 1.0,
    "meters": 1.0,
    "metre": 1.0,
    "metres": 1.0,
    "km": 1000.0,
    "kilometer": 1000.0,
    "kilometers": 1000.0,
    "kilometre": 1000.0,
    "kilometres": 1000.0,
    "ft": 0.3048,
    "feet": 0.3048,
    "mi": 1609.344,
    "miles": 1609.344,
    "nmi": 1852.0,
    "nautical miles": 1852.0,
}
_TEXT_FUNCTIONS = {"lower": "lower", "accenti": "unaccent"}


def _literal_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, date):
        return "date"
    return None


def _describe(node: Any) -> str:
    if isinstance(node, ast.Function):
        return f"function {node.name.upper()}"
    if isinstance(node, ast.Node):
        return type(node).__name__
    return repr(node)[:60]


class _Compiler:
    """One filter, one layer: AST → SQL with bound values."""

    def __init__(self, layer: Layer, binds: Binds, filter_crs: crsmod.CRS, parameter: str):
        self.layer = layer
        self.binds = binds
        self.crs = filter_crs
        self.parameter = parameter

    def fail(self, message: str) -> InvalidParameter:
        return InvalidParameter(f"{message} (in '{self.parameter}').", parameter=self.parameter)

    # conditions
    def condition(self, node: Any) -> str:
        if isinstance(node, bool):
            return "TRUE" if node else "FALSE"
        if isinstance(node, ast.And | ast.Or):
            joiner = " AND " if isinstance(node, ast.And) else " OR "
            return f"({self.condition(node.lhs)}{joiner}{self.condition(node.rhs)})"
        if isinstance(node, ast.Not):
            return f"(NOT {self.condition(node.sub_node)})"
        if isinstance(node, ast.Include):
            return "FALSE" if node.not_ else "TRUE"
        if type(node) in _COMPARISONS:
            return self.comparison(node)
        handlers = (
            (ast.Like, self.like),
            (ast.In, self.in_),
            (ast.Between, self.between),
            (ast.IsNull, self.is_null),
            (ast.SpatialComparisonPredicate, self.spatial),
            (ast.BBox, self.bbox),
            (ast.DistanceWithin, self.dwithin),
            (ast.TemporalPredicate, self.temporal),
        )
        for cls, handler in handlers:
            if isinstance(node, cls):
                return handler(node)
        raise self.fail(f"Unsupported operator or expression: {_describe(node)}")

    def type_of(self, node: Any) -> str | None:
        """Catalog type of an operand (attributes) or of a literal; None if not scalar."""
        if isinstance(node, ast.Attribute):
            if self.is_geometry(node):
                return "geometry"
            return attribute_or_400(self.layer, node.name, self.parameter).type
        if isinstance(node, ast.Function) and node.name in _TEXT_FUNCTIONS:
            return "text"
        return _literal_type(node)

    def operand(self, node: Any, expected: str) -> str:
        """SQL of a scalar operand; literals are bound with the cast of ``expected``."""
        if isinstance(node, ast.Attribute):
            if self.is_geometry(node):
                raise self.fail("The geometry cannot be compared as a value")
            return typed_column(self.layer, attribute_or_400(self.layer, node.name, self.parameter))
        if isinstance(node, ast.Function):
            sql_name = _TEXT_FUNCTIONS.get(node.name)
            if sql_name is None or len(node.arguments) != 1:
                raise self.fail(f"Unsupported function {node.name.upper()}")
            if self.type_of(node.arguments[0]) != "text":
                raise self.fail(f"{node.name.upper()} applies to text only")
            inner = self.operand(node.arguments[0], "text")
            if sql_name == "lower":
                # The ICU root collation lowercases every script (Đ → đ) even when the
                # database's own locale is C.
                return f'lower(({inner}) COLLATE "und-x-icu")'
            return f"{sql_name}({inner})"
        if _literal_type(node) is None:
            raise self.fail(f"Unsupported operand: {_describe(node)}")
        if isinstance(node, str) and "\x00" in node:
            raise self.fail("Text values cannot contain NUL characters")
        value, cast = coerce(node, expected, self.parameter)
        return self.binds.add(value, cast)

    def common_type(self, *nodes: Any) -> str:
        """The type of a comparison: that of its properties; their families must agree."""
        found = [self.type_of(n) for n in nodes]
        types = [t for t in found if t is not None]
        if len(types) < len(found) or "geometry" in types:
            raise self.fail("Only numbers, text, booleans, dates and timestamps can be compared")
        props = [t for n, t in zip(nodes, types, strict=True) if not _literal_type(n)]
        chosen = props[0] if props else types[0]
        for node, kind in zip(nodes, types, strict=True):
            is_prop = not _literal_type(node)
            if is_prop and _FAMILY.get(kind) != _FAMILY.get(chosen):
                raise self.fail(f"Cannot compare {chosen} with {kind}")
        return chosen

    def comparison(self, node: Any) -> str:
        kind = self.common_type(node.lhs, node.rhs)
        op = _COMPARISONS[type(node)]
        return f"({self.operand(node.lhs, kind)} {op} {self.operand(node.rhs, kind)})"

    def like(self, node: ast.Like) -> str:
        if self.type_of(node.lhs) != "text" or self.type_of(node.pattern) != "text":
            raise self.fail("LIKE compares a text property with a text pattern")
        pattern = node.pattern
        while isinstance(pattern, ast.Function) and pattern.arguments:
            pattern = pattern.arguments[0]
        if isinstance(pattern, str) and (len(pattern) - len(pattern.rstrip("\\"))) % 2:
            raise self.fail("A LIKE pattern cannot end with the escape character '\\'")
        # CQL2's wildcards (% and _) and escape (\) are PostgreSQL's own.
        negate = "NOT " if node.not_ else ""
        return (
            f"({self.operand(node.lhs, 'text')} {negate}LIKE {self.operand(node.pattern, 'text')})"
        )

    def in_(self, node: ast.In) -> str:
        if not isinstance(node.sub_nodes, list):
            raise self.fail("IN needs a list of values")
        if not node.sub_nodes:
            return "TRUE" if node.not_ else "FALSE"
        kind = self.common_type(node.lhs, *node.sub_nodes)
        items = ", ".join(self.operand(item, kind) for item in node.sub_nodes)
        return f"({self.operand(node.lhs, kind)} {'NOT ' if node.not_ else ''}IN ({items}))"

    def between(self, node: ast.Between) -> str:
        kind = self.common_type(node.lhs, node.low, node.high)
        if kind not in ("integer", "number", "date", "timestamp", "text"):
            raise self.fail("BETWEEN needs numbers, text, dates or timestamps")
        return (
            f"({self.operand(node.lhs, kind)} {'NOT ' if node.not_ else ''}BETWEEN "
            f"{self.operand(node.low, kind)} AND {self.operand(node.high, kind)})"
        )

    def is_null(self, node: ast.IsNull) -> str:
        if not isinstance(node.lhs, ast.Attribute):
            raise self.fail("IS NULL applies to a property")
        sql = (
            self.geometry_column()
            if self.is_geometry(node.lhs)
            else column(
                self.layer, attribute_or_400(self.layer, node.lhs.name, self.parameter).name
            )
        )
        return f"({sql} IS {'NOT ' if node.not_ else ''}NULL)"

    # spatial
    def is_geometry(self, node: Any) -> bool:
        return isinstance(node, ast.Attribute) and (
            node.name == GEOMETRY_NAME
            or (node.name == self.layer.geometry_column and self.layer.attribute(node.name) is None)
        )

    def geometry_column(self) -> str:
        return column(self.layer, self.layer.geometry_column)

    def literal_geometry(self, node: Any):
        """A shapely geometry in x/y order of the filter CRS; 400 when it is not one."""
        if isinstance(node, ast.Attribute):  # a property that is not the geometry
            attribute = attribute_or_400(self.layer, node.name, self.parameter)
            raise self.fail(f"'{attribute.name}' is not a geometry: use '{GEOMETRY_NAME}'")
        try:
            if isinstance(node, values.Geometry):
                if "crs" in node.geometry:
                    raise self.fail("Give the CRS of geometries with 'filter-crs', not SRID=")
                geom = shape(node.geometry)
            elif isinstance(node, values.Envelope):
                geom = shape(node.geometry)
            elif (
                isinstance(node, ast.Function)
                and node.name == "bbox"
                and len(node.arguments) in (4, 6)
                and all(_literal_type(a) in ("integer", "number") for a in node.arguments)
            ):
                a = [float(v) for v in node.arguments]
                a = a if len(a) == 4 else [a[0], a[1], a[3], a[4]]
                geom = box(min(a[0], a[2]), min(a[1], a[3]), max(a[0], a[2]), max(a[1], a[3]))
            else:
                raise self.fail(
                    f"Expected the geometry property or a geometry literal, not {_describe(node)}"
                )
        except InvalidParameter:
            raise
        except Exception as exc:
            raise self.fail(f"Invalid geometry literal: {exc}") from None
        return self.checked(shapely.force_2d(geom))

    def checked(self, geom):
        if self.crs.lat_lon:  # EPSG:4326 literals are lat/lon: back to x/y
            geom = shapely.transform(geom, lambda coords: coords[:, ::-1])
        if not geom.is_empty:
            x0, y0, x1, y1 = geom.bounds
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                raise self.fail("Geometry coordinates must be finite numbers")
            if self.crs.geographic and not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
                raise self.fail(
                    f"Geometry coordinates are outside lon/lat range in axis order "
                    f"of {self.crs.uri}"
                )
        if not geom.is_valid:
            raise self.fail(f"Invalid geometry literal: {explain_validity(geom)}")
        return geom

    def literal_sql(self, geom) -> str:
        placeholder = self.binds.add(shapely.to_wkb(geom), "bytea")
        return f"ST_GeomFromWKB({placeholder}, {int(self.crs.srid)})"

    def prefilter(self, bounds: tuple[float, float, float, float], srid: int) -> str | None:
        """``geom && box`` in the layer's SRID so the GiST index serves a reprojected test."""
        try:
            box_ = crsmod.prefilter_bounds(bounds, srid, self.layer.srid)
        except ValueError as exc:
            raise self.fail(f"Geometry outside the area of {self.crs.uri}: {exc}") from None
        if box_ is None:
            return "FALSE"
        corners = ", ".join(self.binds.add(float(v), "double precision") for v in box_)
        return f"{self.geometry_column()} && ST_MakeEnvelope({corners}, {int(self.layer.srid)})"

    def spatial_operands(self, lhs: Any, rhs: Any, *, index: bool) -> tuple[str, str, str | None]:
        """SQL of both operands in one SRID, and an index pre-filter when reprojecting."""
        sides: list[str] = []
        prefilter = None
        geoms = [None if self.is_geometry(n) else self.literal_geometry(n) for n in (lhs, rhs)]
        same = self.crs.srid == self.layer.srid or all(g is not None for g in geoms)
        for geom in geoms:
            if geom is not None:
                sides.append(self.literal_sql(geom))
            elif same or all(g is None for g in geoms):
                sides.append(self.geometry_column())
            else:
                sides.append(f"ST_Transform({self.geometry_column()}, {int(self.crs.srid)})")
        literal = next((g for g in geoms if g is not None), None)
        if index and not same and literal is not None and not literal.is_empty:
            prefilter = self.prefilter(literal.bounds, self.crs.srid)
        return sides[0], sides[1], prefilter

    def spatial(self, node: Any) -> str:
        function = _SPATIAL[type(node)]
        # Every relation except disjointness implies that the boxes overlap.
        left, right, pre = self.spatial_operands(
            node.lhs, node.rhs, index=function != "ST_Disjoint"
        )
        test = f"{function}({left}, {right})"
        return f"({pre} AND {test})" if pre else f"({test})"

    def bbox(self, node: ast.BBox) -> str:
        box_crs = (
            crsmod.parse_crs(node.crs, parameter=self.parameter, storage_srid=self.layer.srid)
            if node.crs
            else self.crs
        )
        saved, self.crs = self.crs, box_crs
        try:
            literal = ast.Function("bbox", [node.minx, node.miny, node.maxx, node.maxy])
            return self.spatial(ast.GeometryIntersects(node.lhs, literal))
        finally:
            self.crs = saved

    def dwithin(self, node: ast.DistanceWithin) -> str:
        distance = node.distance
        if (
            _literal_type(distance) not in ("integer", "number")
            or not math.isfinite(distance)
            or distance < 0
        ):
            raise self.fail("S_DWITHIN needs a finite, non-negative distance")
        units = str(node.units.name if isinstance(node.units, ast.Attribute) else node.units)
        factor = _UNITS.get(units.lower())
        if factor is None:
            raise self.fail(f"Unknown distance units '{units}': use meters or kilometers")
        metres = float(distance) * factor
        parts = [self.geography(n) for n in (node.lhs, node.rhs)]
        test = f"ST_DWithin({parts[0][0]}, {parts[1][0]}, {self.binds.add(metres, 'double precision')})"
        literal = parts[0][1] if parts[0][1] is not None else parts[1][1]
        if (
            literal is None
            or literal.is_empty
            or (parts[0][1] is not None and parts[1][1] is not None)
        ):
            return f"({test})"
        pre = self.prefilter(
            _grow(crsmod.to_lonlat_or_none(literal.bounds, self.crs.srid), metres), 4326
        )
        return f"({pre} AND {test})"

    def geography(self, node: Any) -> tuple[str, Any]:
        """An operand as geography (metres on the ellipsoid), and its literal if any."""
        if self.is_geometry(node):
            column_sql = self.geometry_column()
            if self.layer.srid != 4326:
                column_sql = f"ST_Transform({column_sql}, 4326)"
            return f"{column_sql}::geography", None
        geom = self.literal_geometry(node)
        sql = self.literal_sql(geom)
        if self.crs.srid != 4326:
            sql = f"ST_Transform({sql}, 4326)"
        return f"{sql}::geography", geom

    # temporal
    def temporal(self, node: Any) -> str:
        if not isinstance(node.lhs, ast.Attribute):
            raise self.fail("Temporal functions take the time property first")
        attribute = attribute_or_400(self.layer, node.lhs.name, self.parameter)
        if attribute.type not in ("date", "timestamp"):
            raise self.fail(f"'{attribute.name}' is not a date or timestamp property")
        prop = column(self.layer, attribute.name)
        rhs = node.rhs
        if isinstance(rhs, values.Interval):
            start, end = rhs.start, rhs.end
        elif isinstance(rhs, date):
            start = end = rhs
        else:
            raise self.fail(f"Expected a DATE, TIMESTAMP or INTERVAL, not {_describe(rhs)}")

        def bind(value: Any) -> str:
            if not isinstance(value, date):
                raise self.fail("Durations are not supported in intervals")
            bound, cast = coerce(value, attribute.type, self.parameter)
            return self.binds.add(bound, cast)

        return _temporal_sql(type(node), prop, start, end, bind, self.fail)


def _temporal_sql(kind: type, prop: str, start: Any, end: Any, bind, fail) -> str:
    """An instant property against an instant or interval ([start, end], None = open).

    Relations follow OWL-Time with the instant as a degenerate interval; only the bounds a
    relation uses are bound (an unused ``$n`` has no type PostgreSQL could infer).
    """

    def within(strict: bool) -> str:
        lo = f"{prop} {'>' if strict else '>='} {bind(start)}" if start is not None else "TRUE"
        hi = f"{prop} {'<' if strict else '<='} {bind(end)}" if end is not None else "TRUE"
        return f"({lo} AND {hi})"

    if kind is ast.TimeAfter:  # after the end of the interval
        return f"({prop} > {bind(end)})" if end is not None else "FALSE"
    if kind is ast.TimeBefore:
        return f"({prop} < {bind(start)})" if start is not None else "FALSE"
    if kind is ast.TimeDuring:  # strictly inside (OWL-Time intervalDuring)
        return "FALSE" if start is not None and start == end else within(strict=True)
    if kind is ast.TimeEquals:
        return f"({prop} = {bind(start)})" if start is not None and start == end else "FALSE"
    if kind is TimeIntersects:
        return within(strict=False)
    if kind is ast.TimeDisjoint:
        return f"(NOT {within(strict=False)})"
    raise fail(
        f"Unsupported temporal function {kind.__name__}: use T_AFTER, T_BEFORE, "
        "T_DURING, T_EQUALS, T_INTERSECTS or T_DISJOINT"
    )


def _grow(bounds: tuple[float, float, float, float] | None, metres: float):
    """Lon/lat bounds grown by a distance (generously: 1° ≥ 110 km)."""
    if bounds is None:
        return -180.0, -90.0, 180.0, 90.0
    x0, y0, x1, y1 = bounds
    dlat = metres / 110_000.0
    lat = min(89.0, max(abs(y0), abs(y1)) + dlat)
    dlon = metres / (110_000.0 * math.cos(math.radians(lat)))
    return (
        max(-180.0, x0 - dlon),
        max(-90.0, y0 - dlat),
        min(180.0, x1 + dlon),
        min(90.0, y1 + dlat),
    )


def compile_filter(
    tree: Any,
    layer: Layer,
    binds: Binds,
    filter_crs: crsmod.CRS = crsmod.CRS84,
    *,
    parameter: str = "filter",
) -> str:
    """The SQL condition of a parsed filter for ``layer``; values go to ``binds``."""
    compiler = _Compiler(layer, binds, filter_crs, parameter)
    try:
        return compiler.condition(tree)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, RecursionError) as exc:
        # pygeofilter's JSON reader builds nodes without checking their fields' types; a
        # node of the wrong shape is a malformed filter, not a server error.
        raise compiler.fail(f"Malformed filter ({type(exc).__name__})") from None
