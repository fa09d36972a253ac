"""From a query document to SQL: check it against the catalog (``analyse``), then write one
statement (``build``) whose identifiers all come from the catalog and whose values are all bound.

Metric distances, areas and lengths are computed on the WGS 84 ellipsoid (``geography``), not in
a projected CRS. The 2025 city spans 105.9°E–107.8°E — two VN-2000 TM-3 zones (105°45' and
107°45') — so no single projection is the official one everywhere, while geography is exact
everywhere and needs no choice. Its cost is kept small by filtering first with the layers'
geometry GiST indexes: a box grown by the distance (``expand``) and ``&&``, in each layer's SRID.

The source layer is aliased ``t`` (as ``ioc.features.cql2`` expects); each target layer is read through
a subquery in which it is ``t`` too (so its own CQL2 filter compiles), named ``o<i>``/``n<i>``
outside it; administrative units are ``u``; cached memberships ``a``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

import shapely
from shapely.geometry import shape
from shapely.validation import explain_validity

from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog, Layer
from ioc.db.identifiers import quote_ident
from ioc.errors import InvalidParameter, LayerNotFound
from ioc.features import cql2
from ioc.features.binds import Binds, attribute_or_400
from ioc.query.model import QueryDoc, QuerySettings, SpatialPredicate
from ioc.query.units import UNITS, UnitSet, join_condition, members_sql, transform

CITY_TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # UTC+7, no daylight saving
CITY_TZ_NAME = "Asia/Ho_Chi_Minh"
ID, GEOM, ORD = "__ioc_id", "__ioc_geom", "__ioc_n"  # technical columns of every row set
ADDRESS_LAYER, ADDRESS_ATTRIBUTE = "digital_addresses", "code"
_TOPOLOGY = {"intersects": "ST_Intersects", "within": "ST_Within", "contains": "ST_Contains"}
_BUCKETS = {b: b for b in ("hour", "day", "week", "month", "year")}  # SQL text from here only
_NUMERIC = ("integer", "number")
_POLYGONS = ("Polygon", "MultiPolygon")
_LINES = ("LineString", "MultiLineString")
DRIVE_FROM_TARGET = 10  # source/target size ratio from which a layer join starts at the target
_GEOMETRY_TYPES = (
    "Point",
    "LineString",
    "Polygon",
    "MultiPoint",
    "MultiLineString",
    "MultiPolygon",
)


@dataclass(frozen=True)
class Column:
    """A result column: name, catalog type and labels (the manifest of a derived layer)."""

    name: str
    type: str
    label_vi: str
    label_en: str
    unit: str | None = None

    def as_attribute(self) -> dict[str, Any]:
        spec = {
            "name": self.name,
            "type": self.type,
            "label": {"vi": self.label_vi, "en": self.label_en},
        }
        if self.unit:
            spec["unit"] = self.unit
        return spec


@dataclass(frozen=True)
class Lookup:
    """A target to read from the database: the geometry of one feature found by a code."""

    layer: Layer
    attribute: str
    value: str
    parameter: str
    what: str


@dataclass
class Plan:
    """A query document checked against the catalog and the caller's rights and limits."""

    doc: QueryDoc
    source: Layer
    max_rows: int
    filter: Any = None
    targets: dict[int, Layer] = field(default_factory=dict)  # predicate index → target layer
    target_filters: dict[int, Any] = field(default_factory=dict)
    lookups: dict[int, Lookup] = field(default_factory=dict)
    literals: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # index → (WKB, SRID)
    unit: UnitSet | None = None
    unit_layer: Layer | None = None
    layers: list[Layer] = field(default_factory=list)  # every layer the query reads
    membership: int | None = None  # max fid of a usable cached membership

    @property
    def limit(self) -> int:
        return self.doc.limit or self.max_rows


@dataclass
class Compiled:
    """One statement: rows with ``__ioc_id``, the result columns, ``__ioc_geom`` (EPSG:4326,
    or NULL) and ``__ioc_n`` (the order), at most ``limit + 1`` of them."""

    sql: str
    args: list[Any]
    columns: list[Column]
    kind: str  # "features" or "groups"
    geometry_type: str | None
    limit: int


def readable(catalog: Catalog, layer_id: str, principal: Principal, parameter: str) -> Layer:
    """A layer the caller may read; otherwise the same 404 as for a layer that does not exist."""
    try:
        return catalog.get(layer_id, principal)
    except LayerNotFound:
        raise LayerNotFound(f"There is no layer '{layer_id}'.", parameter=parameter) from None


def _fail(parameter: str, message: str) -> InvalidParameter:
    return InvalidParameter(f"{message} (in '{parameter}').", parameter=parameter)


def _parse_filter(value: Any, lang: str | None, parameter: str) -> Any:
    if isinstance(value, dict):
        return cql2.parse_filter(json.dumps(value), lang or "cql2-json", parameter=parameter)
    return cql2.parse_filter(value, lang or "cql2-text", parameter=parameter)


def _literal_geometry(value: dict[str, Any], parameter: str, max_vertices: int) -> bytes:
    """A GeoJSON geometry (CRS84) as WKB; 400 when malformed, invalid, huge or off the Earth."""
    try:
        geom = shapely.force_2d(shape(value))
    except Exception as exc:  # shapely raises several kinds on malformed GeoJSON
        raise _fail(
            parameter, f"Not a GeoJSON geometry: {str(exc)[:120] or type(exc).__name__}"
        ) from None
    if geom.geom_type not in _GEOMETRY_TYPES or geom.is_empty:
        raise _fail(parameter, "Expected a non-empty Point, LineString or Polygon (or Multi-)")
    if shapely.get_num_coordinates(geom) > max_vertices:
        raise _fail(parameter, f"The geometry has more than {max_vertices} vertices")
    x0, y0, x1, y1 = geom.bounds
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (
        -180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90
    ):
        raise _fail(parameter, "Coordinates must be longitude, latitude (CRS84)")
    if not geom.is_valid:
        raise _fail(parameter, f"Invalid geometry: {explain_validity(geom)}")
    return shapely.to_wkb(geom)


def analyse(
    doc: QueryDoc, catalog: Catalog, principal: Principal, max_rows: int, settings: QuerySettings
) -> Plan:
    """Check a document against the catalog: layers readable (404), attributes known and of
    the right type, targets well-formed, limits within the caller's (400)."""
    plan = Plan(doc, readable(catalog, doc.source, principal, "source"), max_rows)
    source = plan.source
    plan.layers.append(source)
    if doc.limit is not None and doc.limit > max_rows:
        raise _fail(
            "limit",
            f"At most {max_rows:,} rows for your role: run a job (POST /query/jobs) for more",
        )
    if doc.filter is not None:
        plan.filter = _parse_filter(doc.filter, doc.filter_lang, "filter")
    if (doc.from_ or doc.to) and _time_attribute(source, "from") is None:
        raise _fail("from", f"Layer '{source.id}' has no time attribute")
    for i, p in enumerate(doc.spatial):
        _analyse_predicate(plan, i, p, catalog, principal, settings)
    for i, key in enumerate(doc.group_by):
        where = f"group_by.{i}"
        if key.ward or key.district:
            kind = "ward" if key.ward else "district"
            plan.unit = UNITS[(kind, key.ward or key.district)]  # type: ignore[index]
            plan.unit_layer = readable(catalog, plan.unit.layer_id, principal, f"{where}.{kind}")
            plan.layers.append(plan.unit_layer)
        elif key.time:
            attribute = _time_attribute(source, f"{where}.time")
            if attribute is None:
                raise _fail(f"{where}.time", f"Layer '{source.id}' has no time attribute")
            if key.time == "hour" and attribute.type == "date":
                raise _fail(f"{where}.time", f"'{attribute.name}' is a date: use day or longer")
        else:
            attribute_or_400(source, key.attribute or "", f"{where}.attribute")
    for i, aggregate in enumerate(doc.aggregates):
        _check_aggregate(source, aggregate, f"aggregates.{i}")
    for name in doc.properties or ():
        attribute_or_400(source, name, "properties")
    return plan


def _time_attribute(layer: Layer, parameter: str):
    if not layer.time_column:
        return None
    attribute = attribute_or_400(layer, layer.time_column, parameter)
    return attribute if attribute.type in ("date", "timestamp") else None


def _analyse_predicate(
    plan: Plan,
    i: int,
    p: SpatialPredicate,
    catalog: Catalog,
    principal: Principal,
    settings: QuerySettings,
) -> None:
    where = f"spatial.{i}"
    if p.distance is not None and p.distance > settings.max_distance_m:
        raise _fail(f"{where}.distance", f"At most {settings.max_distance_m:,.0f} m")
    if p.k is not None and p.k > settings.max_k:
        raise _fail(f"{where}.k", f"At most {settings.max_k} nearest features")
    if p.layer is not None:
        target = readable(catalog, p.layer, principal, f"{where}.layer")
        plan.targets[i] = target
        plan.layers.append(target)
        if p.filter is not None:
            plan.target_filters[i] = _parse_filter(p.filter, p.filter_lang, f"{where}.filter")
    elif p.geometry is not None:
        plan.literals[i] = (
            _literal_geometry(p.geometry, f"{where}.geometry", settings.max_vertices),
            4326,
        )
    elif p.address is not None:
        layer = readable(catalog, ADDRESS_LAYER, principal, f"{where}.address")
        attribute_or_400(layer, ADDRESS_ATTRIBUTE, f"{where}.address")
        plan.lookups[i] = Lookup(
            layer, ADDRESS_ATTRIBUTE, p.address, f"{where}.address", "digital address"
        )
        plan.layers.append(layer)
    else:
        units = UNITS[("ward", p.ward_edition)]
        layer = readable(catalog, units.layer_id, principal, f"{where}.ward")
        plan.lookups[i] = Lookup(layer, units.code, p.ward or "", f"{where}.ward", "ward")
        plan.layers.append(layer)


def _check_aggregate(source: Layer, aggregate, where: str) -> None:
    op = aggregate.op
    if op == "area" and source.geometry_type not in _POLYGONS:
        raise _fail(
            f"{where}.op",
            f"'area' needs a polygon layer; '{source.id}' has {source.geometry_type} geometries",
        )
    if op == "length" and source.geometry_type not in _LINES:
        raise _fail(
            f"{where}.op",
            f"'length' needs a line layer; '{source.id}' has {source.geometry_type} geometries",
        )
    if aggregate.attribute is None:
        return
    attribute = attribute_or_400(source, aggregate.attribute, f"{where}.attribute")
    if op in ("sum", "avg") and attribute.type not in _NUMERIC:
        raise _fail(
            f"{where}.attribute", f"'{op}' needs a number; '{attribute.name}' is {attribute.type}"
        )
    if op in ("min", "max") and attribute.type == "boolean":
        raise _fail(f"{where}.attribute", f"'{op}' does not apply to a boolean")


# --- SQL helpers -------------------------------------------------------------------------------


def to4326(expr: str, srid: int) -> str:
    return transform(expr, srid, 4326)


def geog(expr: str, srid: int) -> str:
    """An expression as geography (metres on the WGS 84 ellipsoid)."""
    return f"{to4326(expr, srid)}::geography"


def expand(g4326: str, metres: str, srid: int) -> str:
    """A box around a lon/lat geometry that contains every point within ``metres`` of it, in
    ``srid``, for ``&&``. A degree of latitude is at least 110.57 km and one of longitude at
    least 111.32 km × cos(latitude) on the ellipsoid; dividing by 110 km (at the latitude
    farthest from the equator, plus the margin) errs on the large side."""
    dy = f"(({metres}) / 110000.0)"
    dx = (
        f"(({metres}) / (110000.0 * cos(radians(least(88.0, greatest(abs(ST_YMin({g4326})),"
        f" abs(ST_YMax({g4326}))) + {dy})))))"
    )
    box = f"ST_Expand({g4326}, {dx}, {dy})"
    # Edges straight in lon/lat are curves in a projection: segmentize (0.01° ≈ 1 km) first.
    return box if srid == 4326 else f"ST_Transform(ST_Segmentize({box}, 0.01), {int(srid)})"


class _Builder:
    """One plan → one statement."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.doc = plan.doc
        self.src = plan.source
        self.binds = Binds()
        self.literal_sql: dict[int, str] = {}
        self.distance: str | None = None  # distance_m of features to a single target

    # names
    def col(self, name: str, alias: str = "t") -> str:
        return f"{alias}.{quote_ident(name)}"

    @property
    def geom(self) -> str:
        return self.col(self.src.geometry_column)

    @property
    def fid(self) -> str:
        return self.col(self.src.id_column)

    def literal(self, i: int) -> tuple[str, int]:
        """SQL of a literal target (bound once, reused), and its SRID."""
        wkb, srid = self.plan.literals[i]
        if i not in self.literal_sql:
            self.literal_sql[i] = f"ST_GeomFromWKB({self.binds.add(wkb, 'bytea')}, {int(srid)})"
        return self.literal_sql[i], srid

    # WHERE
    def attribute_conditions(self) -> list[str]:
        """The CQL2 filter and the time range."""
        conds = []
        if self.plan.filter is not None:
            conds.append(cql2.compile_filter(self.plan.filter, self.src, self.binds))
        return conds + self.period()

    def conditions(self) -> list[str]:
        """Filter, time range and spatial predicates other than ``nearest``."""
        conds = self.attribute_conditions()
        for i, p in enumerate(self.doc.spatial):
            if p.op != "nearest":
                conds.append(self.predicate(i, p))
        return conds

    def where(self) -> str:
        """Every condition, ``nearest`` last (it ranks among the features the others keep)."""
        conds = self.conditions()
        conds += [self.nearest(i, p) for i, p in enumerate(self.doc.spatial) if p.op == "nearest"]
        return " AND ".join(conds) or "TRUE"

    def period(self) -> list[str]:
        """``from`` ≤ time < ``to``; naive times are city time. A date attribute's day is in
        the range when its first instant (city midnight) is."""
        if not (self.doc.from_ or self.doc.to):
            return []
        attribute = self.src.attribute(self.src.time_column or "")
        assert attribute is not None  # checked by analyse
        column = self.col(attribute.name)
        out = []
        for value, op in ((self.doc.from_, ">="), (self.doc.to, "<")):
            if value is None:
                continue
            moment = value if value.tzinfo else value.replace(tzinfo=CITY_TZ)
            if attribute.type == "date":
                local = moment.astimezone(CITY_TZ)
                day = local.date()
                if local.time() != time(0):
                    op = ">" if op == ">=" else "<="
                out.append(f"{column} {op} {self.binds.add(day, 'date')}")
            else:
                out.append(f"{column} {op} {self.binds.add(moment, 'timestamptz')}")
        return out

    def target_subquery(self, i: int, alias: str) -> str:
        """A target layer as ``(SELECT geometry AS g FROM layer t WHERE filter) alias``."""
        target = self.plan.targets[i]
        tree = self.plan.target_filters.get(i)
        cond = (
            cql2.compile_filter(tree, target, self.binds, parameter=f"spatial.{i}.filter")
            if tree is not None
            else "TRUE"
        )
        return (
            f"(SELECT t.{quote_ident(target.geometry_column)} AS g FROM {target.table_sql} t"
            f" WHERE {cond}) {alias}"
        )

    def predicate(self, i: int, p: SpatialPredicate) -> str:
        src, g = self.src, self.geom
        d = self.binds.add(float(p.distance), "double precision") if p.distance else None
        if i not in self.plan.targets:  # one geometry: GeoJSON, address point, ward area
            lit, lsrid = self.literal(i)
            if p.op in _TOPOLOGY:
                # Tested in the source's SRID: the index on t serves it (PostGIS adds the &&).
                return f"{_TOPOLOGY[p.op]}({g}, {transform(lit, lsrid, src.srid)})"
            if self.distance is None:
                self.distance = f"ST_Distance({geog(g, src.srid)}, {geog(lit, lsrid)})"
            return (
                f"({g} && {expand(to4326(lit, lsrid), d, src.srid)} AND "  # type: ignore[arg-type]
                f"ST_DWithin({geog(g, src.srid)}, {geog(lit, lsrid)}, {d}))"
            )
        target = self.plan.targets[i]
        alias = f"o{i}"
        og = f"{alias}.g"
        if p.op in _TOPOLOGY:
            fn = _TOPOLOGY[p.op]
            if target.srid == src.srid:
                cond = f"{fn}({g}, {og})"
            else:  # tested in the target's SRID, where its index is
                moved = transform(g, src.srid, target.srid)
                cond = f"{og} && {moved} AND {fn}({moved}, {og})"
        else:
            # Both boxes, so that the planner may drive the join from either side's index.
            cond = (
                f"{og} && {expand(to4326(g, src.srid), d, target.srid)} AND "  # type: ignore[arg-type]
                f"{g} && {expand(to4326(og, target.srid), d, src.srid)} AND "  # type: ignore[arg-type]
                f"ST_DWithin({geog(g, src.srid)}, {geog(og, target.srid)}, {d})"
            )
        subquery = self.target_subquery(i, alias)
        if src.feature_count >= DRIVE_FROM_TARGET * max(1, target.feature_count):
            # A large source against a small target (a million reports near 200 flood points):
            # join from the target's side, probing the source's index, then keep those ids —
            # EXISTS would probe the target once per source row (6.5 s against 0.9 s).
            inner = " AND ".join(self.attribute_conditions()) or "TRUE"
            return (
                f"{self.fid} IN (SELECT {self.fid} FROM {src.table_sql} t JOIN {subquery} "
                f"ON {cond} WHERE {inner})"
            )
        return f"EXISTS (SELECT 1 FROM {subquery} WHERE {cond})"

    def nearest(self, i: int, p: SpatialPredicate) -> str:
        """The ``k`` features (after the other conditions) nearest to the target, exactly by
        ellipsoidal distance: the index's ``<->`` order (planar degrees) finds k candidates;
        the farthest of them bounds the search radius r; every feature within r is ranked by
        its true distance. With a layer target: for each of its features."""
        k = self.binds.add(int(p.k or 1), "bigint")
        if i not in self.plan.targets:
            lit, lsrid = self.literal(i)
            self.distance = (
                self.distance
                or f"ST_Distance({geog(self.geom, self.src.srid)}, {geog(lit, lsrid)})"
            )
            return f"{self.fid} IN ({self.nearest_ids(lit, lsrid, k)})"
        target = self.plan.targets[i]
        alias = f"n{i}"
        ids = self.nearest_ids(f"{alias}.g", target.srid, k)
        return (
            f"{self.fid} IN (SELECT x.id FROM {self.target_subquery(i, alias)} "
            f"CROSS JOIN LATERAL ({ids}) x)"
        )

    def nearest_ids(self, target: str, tsrid: int, k: str) -> str:
        src, g, table = self.src, self.geom, self.src.table_sql
        geomcol = quote_ident(src.geometry_column)
        tg = geog(target, tsrid)
        candidates = " AND ".join(self.conditions()) or "TRUE"
        # r gets a hair of margin: ST_DWithin and ST_Distance on geography may disagree in the
        # last digits, and the farthest candidate must not fall out.
        radius = (
            f"(SELECT max(ST_Distance({geog('c.g', src.srid)}, {tg})) * 1.000001 + 0.01"
            f" AS r FROM "
            f"(SELECT t.{geomcol} AS g FROM {table} t WHERE {candidates} ORDER BY "
            f"t.{geomcol} <-> {transform(target, tsrid, src.srid)} LIMIT {k}) c) rr"
        )
        again = " AND ".join(self.conditions()) or "TRUE"
        return (
            f"SELECT {self.fid} AS id FROM {radius} CROSS JOIN {table} t WHERE {again} AND "
            f"{g} && {expand(to4326(target, tsrid), 'rr.r', src.srid)} AND "
            f"ST_DWithin({geog(g, src.srid)}, {tg}, rr.r) "
            f"ORDER BY ST_Distance({geog(g, src.srid)}, {tg}), {self.fid} LIMIT {k}"
        )

    # result rows
    def order(self, names: dict[str, str], default: list[str]) -> list[str]:
        keys = []
        for i, key in enumerate(self.doc.order_by):
            if key.key not in names:
                known = ", ".join(names) or "none"
                raise _fail(
                    f"order_by.{i}.key", f"Unknown sort key '{key.key}' (use one of {known})"
                )
            direction = "DESC NULLS LAST" if key.desc else "ASC NULLS LAST"
            keys.append(f"{names[key.key]} {direction}")
        return keys + default

    def wrap(self, select: str, order: list[str]) -> str:
        """Number the rows in order, then one page (``limit + 1`` to see truncation)."""
        by = ", ".join(order)
        limit = self.binds.add(self.plan.limit + 1, "bigint")
        offset = self.binds.add(self.doc.offset, "bigint")
        return (
            f"SELECT q.*, row_number() OVER (ORDER BY {by}) AS {ORD} FROM ({select}) q "
            f"ORDER BY {by} LIMIT {limit} OFFSET {offset}"
        )

    def features(self) -> Compiled:
        src = self.src
        where = self.where()
        names = (
            list(dict.fromkeys(self.doc.properties))
            if self.doc.properties is not None
            else [a.name for a in src.attributes]
        )
        columns = [_attribute_column(src, n) for n in names]
        cols = [f"{self.col(n)} AS {quote_ident(n)}" for n in names]
        sortable = {n: f"q.{quote_ident(n)}" for n in names}
        if self.distance is not None:
            if "distance_m" in names:
                raise _fail(
                    "properties",
                    "'distance_m' is the distance column: do not select an attribute of that name",
                )
            cols.append(f"{self.distance} AS distance_m")
            columns.append(Column("distance_m", "number", "Khoảng cách", "Distance", "m"))
            sortable["distance_m"] = "q.distance_m"
        for i, key in enumerate(self.doc.order_by):  # sorting by an attribute not returned
            if key.key not in sortable and src.attribute(key.key) is not None:
                cols.append(f"{self.col(key.key)} AS __ioc_s{i}")
                sortable[key.key] = f"q.__ioc_s{i}"
        geometry = to4326(self.geom, src.srid) if self.doc.geometry else "NULL::geometry"
        select = (
            f"SELECT {self.fid} AS {ID}, {', '.join(cols + [f'{geometry} AS {GEOM}'])} "
            f"FROM {src.table_sql} t WHERE {where}"
        )
        default = (["q.distance_m"] if self.distance is not None else []) + [f"q.{ID}"]
        sql = self.wrap(select, self.order(sortable, default))
        gtype = src.geometry_type if self.doc.geometry else None
        return Compiled(sql, self.binds.values, columns, "features", gtype, self.plan.limit)

    def groups(self) -> Compiled:
        plan, doc, src = self.plan, self.doc, self.src
        unit, ulayer = plan.unit, plan.unit_layer
        keys: list[tuple[str, Column | None]] = []  # (inner expression, column; None = unit)
        for key in doc.group_by:
            if key.ward or key.district:
                keys.append(("__unit__", None))
            elif key.time:
                keys.append(self.bucket(key.time))
            else:
                attribute = attribute_or_400(src, key.attribute or "", "group_by")
                keys.append((self.col(attribute.name), _attribute_column(src, attribute.name)))
        aggregates = [self.aggregate(a) for a in doc.aggregates] or [
            ("count(*)", Column("count", "integer", "Số lượng", "Count"))
        ]
        only_unit = unit is not None and len(keys) == 1
        counts_only = all(sql in ("count(*)",) for sql, _ in aggregates)
        clip = any(a.op in ("area", "length") for a in doc.aggregates)
        where_conds = self.where()
        where_conds = "" if where_conds == "TRUE" else where_conds
        if unit is not None:
            assert ulayer is not None
            uid = self.col(ulayer.id_column, "u")
            if plan.membership is not None:
                members = members_sql(src, ulayer, self.binds, plan.membership)
                if not where_conds and counts_only and only_unit:
                    from_sql, unit_key = f"{members} a", "a.unit_fid"
                else:
                    from_sql = f"{src.table_sql} t JOIN {members} a ON a.fid = {self.fid}"
                    if clip:
                        from_sql += f" JOIN {ulayer.table_sql} u ON {uid} = a.unit_fid"
                    unit_key = "a.unit_fid"
            else:
                from_sql = (
                    f"{src.table_sql} t JOIN {ulayer.table_sql} u ON {join_condition(src, ulayer)}"
                )
                unit_key = uid
            keys = [(unit_key if c is None else e, c) for e, c in keys]
        else:
            from_sql = f"{src.table_sql} t"
        inner_cols = [f"{e} AS k{i}" for i, (e, _) in enumerate(keys)]
        inner_cols += [f"{sql} AS a{i}" for i, (sql, _) in enumerate(aggregates)]
        group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else ""
        inner = (
            f"SELECT {', '.join(inner_cols)} FROM {from_sql} WHERE {where_conds or 'TRUE'}{group}"
        )
        out, columns, names = [], [], {}
        for i, (_, column) in enumerate(keys):
            if column is None:
                assert unit is not None
                for attr, name, label_vi, label_en in _unit_columns(unit):
                    if name in names:
                        raise _fail(f"group_by.{i}", f"Two result columns are named '{name}'")
                    out.append(f"{self.col(attr, 'u')}::text AS {quote_ident(name)}")
                    columns.append(Column(name, "text", label_vi, label_en))
                    names[name] = f"q.{quote_ident(name)}"
            else:
                if column.name in names:
                    raise _fail(f"group_by.{i}", f"Two result columns are named '{column.name}'")
                out.append(f"g.k{i} AS {quote_ident(column.name)}")
                columns.append(column)
                names[column.name] = f"q.{quote_ident(column.name)}"
        for i, (sql, column) in enumerate(aggregates):
            if column.name in names:
                raise _fail(
                    f"aggregates.{i}",
                    f"Two result columns are named '{column.name}': name the aggregate with 'as'",
                )
            zero = sql.startswith("count(")
            value = f"COALESCE(g.a{i}, 0)" if zero and only_unit else f"g.a{i}"
            out.append(f"{value} AS {quote_ident(column.name)}")
            columns.append(column)
            names[column.name] = f"q.{quote_ident(column.name)}"
        if unit is not None:
            assert ulayer is not None
            uid = self.col(ulayer.id_column, "u")
            ugeom = self.col(ulayer.geometry_column, "u")
            geometry = "NULL::geometry"
            if doc.geometry:
                geometry = to4326(ugeom, ulayer.srid)
                if doc.simplify:
                    tolerance = self.binds.add(float(doc.simplify), "double precision")
                    geometry = f"ST_Multi(ST_SimplifyPreserveTopology({geometry}, {tolerance}))"
            ident = f"u.{quote_ident(unit.code)}::text" if only_unit else "NULL::text"
            unit_k = next(i for i, (_, c) in enumerate(keys) if c is None)
            joined = (
                f"{ulayer.table_sql} u LEFT JOIN ({inner}) g ON g.k{unit_k} = {uid}"
                if only_unit
                else f"({inner}) g JOIN {ulayer.table_sql} u ON {uid} = g.k{unit_k}"
            )
            select = f"SELECT {ident} AS {ID}, {', '.join(out)}, {geometry} AS {GEOM} FROM {joined}"
            gtype = "MultiPolygon" if doc.geometry else None
        else:
            select = (
                f"SELECT NULL::text AS {ID}, {', '.join(out)}, NULL::geometry AS {GEOM} "
                f"FROM ({inner}) g"
            )
            gtype = None
        default = [names[c.name] for c in columns[: len(columns) - len(aggregates)]] or [f"q.{ID}"]
        sql = self.wrap(select, self.order(names, default))
        return Compiled(sql, self.binds.values, columns, "groups", gtype, plan.limit)

    def bucket(self, bucket: str) -> tuple[str, Column]:
        attribute = self.src.attribute(self.src.time_column or "")
        assert attribute is not None
        unit = _BUCKETS[bucket]
        column = self.col(attribute.name)
        label = {
            "hour": ("Giờ", "Hour"),
            "day": ("Ngày", "Day"),
            "week": ("Tuần", "Week"),
            "month": ("Tháng", "Month"),
            "year": ("Năm", "Year"),
        }[unit]
        if attribute.type == "date":
            return f"date_trunc('{unit}', {column})::date", Column(unit, "date", *label)
        # Buckets are city days and months (UTC+7), whatever the server's time zone.
        return (
            f"date_trunc('{unit}', {column}, '{CITY_TZ_NAME}')",
            Column(unit, "timestamp", *label),
        )

    def aggregate(self, aggregate) -> tuple[str, Column]:
        op, name = aggregate.op, aggregate.attribute
        src = self.src
        if op in ("area", "length"):
            shape_sql, srid = self.geom, src.srid
            if self.plan.unit_layer is not None:  # the part inside the unit
                ulayer = self.plan.unit_layer
                shape_sql = (
                    f"ST_Intersection({transform(self.geom, src.srid, ulayer.srid)}, "
                    f"{self.col(ulayer.geometry_column, 'u')})"
                )
                srid = ulayer.srid
            fn = "ST_Area" if op == "area" else "ST_Length"
            sql = f"COALESCE(sum({fn}({geog(shape_sql, srid)})), 0)::double precision"
            label = ("Diện tích", "Area", "m²") if op == "area" else ("Chiều dài", "Length", "m")
            return sql, Column(
                aggregate.as_ or f"{op}_m{'2' if op == 'area' else ''}", "number", *label
            )
        if name is None:
            return "count(*)", Column(aggregate.as_ or "count", "integer", "Số lượng", "Count")
        attribute = attribute_or_400(src, name, "aggregates")
        column = self.col(attribute.name)
        vi, en = attribute.label_vi, attribute.label_en
        default = f"{op}_{attribute.name}"
        if aggregate.as_ is None and len(default.encode()) > 63:
            raise _fail("aggregates", f"Name the aggregate of '{attribute.name}' with 'as'")
        alias = aggregate.as_ or default
        if op == "count":
            return f"count({column})", Column(alias, "integer", f"Số lượng {vi}", f"Count of {en}")
        if op == "count_distinct":
            return (
                f"count(DISTINCT {column})",
                Column(alias, "integer", f"Số giá trị {vi}", f"Distinct {en}"),
            )
        if op in ("sum", "avg"):
            word = ("Tổng", "Sum of") if op == "sum" else ("Trung bình", "Mean")
            return (
                f"{op}({column})::double precision",
                Column(alias, "number", f"{word[0]} {vi}", f"{word[1]} {en}", attribute.unit),
            )
        word = ("Nhỏ nhất", "Minimum") if op == "min" else ("Lớn nhất", "Maximum")
        return (
            f"{op}({column})",
            Column(
                alias, attribute.type, f"{vi} {word[0].lower()}", f"{word[1]} {en}", attribute.unit
            ),
        )


def _attribute_column(layer: Layer, name: str) -> Column:
    a = attribute_or_400(layer, name, "properties")
    return Column(
        a.name,
        a.type
        if a.type in ("integer", "number", "text", "boolean", "date", "timestamp")
        else "text",
        a.label_vi,
        a.label_en,
        a.unit,
    )


def _unit_columns(unit: UnitSet) -> list[tuple[str, str, str, str]]:
    """(attribute, result column, labels) of a unit: code, name and extras."""
    kind_vi, kind_en = unit.label_vi, unit.label_en
    cols = [
        (unit.code, unit.out_code, f"Mã — {kind_vi}", f"Code — {kind_en}"),
        (unit.name, unit.out_name, f"Tên — {kind_vi}", f"Name — {kind_en}"),
    ]
    cols += [(attr, name, name, name) for attr, name in unit.extra]
    return cols


def build(plan: Plan) -> Compiled:
    """The statement of a plan (after ``resolve`` has read its address and ward targets)."""
    missing = [i for i in plan.lookups if i not in plan.literals]
    if missing:
        raise RuntimeError(f"targets {missing} were not resolved")
    builder = _Builder(plan)
    return builder.groups() if plan.doc.grouped else builder.features()


async def resolve(conn, plan: Plan, *, min_features: int | None = None) -> None:
    """Read the geometries of address and ward targets (400 when a code is unknown) and
    whether a cached unit membership can serve the grouping."""
    for i, lookup in plan.lookups.items():
        layer = lookup.layer
        row = await conn.fetchrow(
            f"SELECT ST_AsBinary(t.{quote_ident(layer.geometry_column)}) AS wkb FROM "
            f"{layer.table_sql} t WHERE t.{quote_ident(lookup.attribute)}::text = $1 "
            f"ORDER BY t.{quote_ident(layer.id_column)} LIMIT 1",
            lookup.value,
        )
        if row is None or row["wkb"] is None:
            raise InvalidParameter(
                f"There is no {lookup.what} '{lookup.value}' (in '{lookup.parameter}').",
                parameter=lookup.parameter,
            )
        plan.literals[i] = (bytes(row["wkb"]), layer.srid)
    if plan.unit_layer is not None and min_features is not None:
        from ioc.query import units

        if units.cacheable(plan.source, min_features):
            plan.membership = await units.cached_max_fid(conn, plan.source, plan.unit_layer)
