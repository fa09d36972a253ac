"""Writing a checked query (``ioc.query.analysis.Plan``) as one statement (``build``) whose
identifiers all come from the catalog and whose values are all bound.

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

from dataclasses import dataclass
from datetime import time
from typing import Any

from ioc.catalog.layers import Layer
from ioc.db.identifiers import quote_ident
from ioc.features import cql2_sql
from ioc.features.binds import Binds, attribute_or_400
from ioc.query.analysis import (
    CITY_TZ,
    CITY_TZ_NAME,
    GEOM,
    ID,
    ORD,
    Plan,
    _fail,
)
from ioc.query.model import SpatialPredicate
from ioc.query.units import UnitSet, join_condition, members_sql, transform

_TOPOLOGY = {"intersects": "ST_Intersects", "within": "ST_Within", "contains": "ST_Contains"}
_BUCKETS = {b: b for b in ("hour", "day", "week", "month", "year")}  # SQL text from here only
DRIVE_FROM_TARGET = 10  # source/target size ratio from which a layer join starts at the target


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
            conds.append(cql2_sql.compile_filter(self.plan.filter, self.src, self.binds))
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
            cql2_sql.compile_filter(tree, target, self.binds, parameter=f"spatial.{i}.filter")
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
        """Grouped rows: keys (attributes, time buckets, the unit), aggregates, and with a unit
        its code and geometry; with only a unit key, every unit (empty ones with zero counts)."""
        plan, doc = self.plan, self.doc
        keys = self.group_keys()
        aggregates = [self.aggregate(a) for a in doc.aggregates] or [
            ("count(*)", Column("count", "integer", "Số lượng", "Count"))
        ]
        only_unit = plan.unit is not None and len(keys) == 1
        where_conds = self.where()
        where_conds = "" if where_conds == "TRUE" else where_conds
        from_sql, keys = self.group_source(keys, aggregates, where_conds, only_unit)
        inner_cols = [f"{e} AS k{i}" for i, (e, _) in enumerate(keys)]
        inner_cols += [f"{sql} AS a{i}" for i, (sql, _) in enumerate(aggregates)]
        group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else ""
        inner = (
            f"SELECT {', '.join(inner_cols)} FROM {from_sql} WHERE {where_conds or 'TRUE'}{group}"
        )
        out, columns, names = self.group_columns(keys, aggregates, only_unit)
        select, gtype = self.group_select(inner, out, keys, only_unit)
        default = [names[c.name] for c in columns[: len(columns) - len(aggregates)]] or [f"q.{ID}"]
        sql = self.wrap(select, self.order(names, default))
        return Compiled(sql, self.binds.values, columns, "groups", gtype, plan.limit)

    def group_keys(self) -> list[tuple[str, Column | None]]:
        """(inner expression, column) of each key; the unit key is ("__unit__", None)."""
        keys: list[tuple[str, Column | None]] = []
        for key in self.doc.group_by:
            if key.ward or key.district:
                keys.append(("__unit__", None))
            elif key.time:
                keys.append(self.bucket(key.time))
            else:
                attribute = attribute_or_400(self.src, key.attribute or "", "group_by")
                keys.append((self.col(attribute.name), _attribute_column(self.src, attribute.name)))
        return keys

    def group_source(
        self,
        keys: list[tuple[str, Column | None]],
        aggregates: list[tuple[str, Column]],
        where_conds: str,
        only_unit: bool,
    ) -> tuple[str, list[tuple[str, Column | None]]]:
        """The FROM of the grouping and the keys with the unit key's expression: the cached
        memberships when usable (alone when only counting features per unit), else a spatial join
        to the unit layer."""
        plan, src, unit, ulayer = self.plan, self.src, self.plan.unit, self.plan.unit_layer
        if unit is None:
            return f"{src.table_sql} t", keys
        assert ulayer is not None
        counts_only = all(sql in ("count(*)",) for sql, _ in aggregates)
        clip = any(a.op in ("area", "length") for a in self.doc.aggregates)
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
        return from_sql, [(unit_key if c is None else e, c) for e, c in keys]

    def group_columns(
        self,
        keys: list[tuple[str, Column | None]],
        aggregates: list[tuple[str, Column]],
        only_unit: bool,
    ) -> tuple[list[str], list[Column], dict[str, str]]:
        """Outer select items, result columns and their names (400 on a name used twice)."""
        out: list[str] = []
        columns: list[Column] = []
        names: dict[str, str] = {}

        def add(item: str, column: Column, parameter: str, hint: str = "") -> None:
            if column.name in names:
                raise _fail(parameter, f"Two result columns are named '{column.name}'{hint}")
            out.append(item)
            columns.append(column)
            names[column.name] = f"q.{quote_ident(column.name)}"

        for i, (_, column) in enumerate(keys):
            if column is None:
                assert self.plan.unit is not None
                for attr, name, label_vi, label_en in _unit_columns(self.plan.unit):
                    item = f"{self.col(attr, 'u')}::text AS {quote_ident(name)}"
                    add(item, Column(name, "text", label_vi, label_en), f"group_by.{i}")
            else:
                add(f"g.k{i} AS {quote_ident(column.name)}", column, f"group_by.{i}")
        for i, (sql, column) in enumerate(aggregates):
            zero = sql.startswith("count(")
            value = f"COALESCE(g.a{i}, 0)" if zero and only_unit else f"g.a{i}"
            hint = ": name the aggregate with 'as'"
            add(f"{value} AS {quote_ident(column.name)}", column, f"aggregates.{i}", hint)
        return out, columns, names

    def group_select(
        self, inner: str, out: list[str], keys: list[tuple[str, Column | None]], only_unit: bool
    ) -> tuple[str, str | None]:
        """The select over the grouped rows, joined to the unit layer when grouping by unit
        (every unit when it is the only key), and its geometry type."""
        doc, unit, ulayer = self.doc, self.plan.unit, self.plan.unit_layer
        if unit is None:
            select = (
                f"SELECT NULL::text AS {ID}, {', '.join(out)}, NULL::geometry AS {GEOM} "
                f"FROM ({inner}) g"
            )
            return select, None
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
        return select, "MultiPolygon" if doc.geometry else None

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


def statement_builder(plan: Plan) -> _Builder:
    """A builder for a statement ``ioc.query`` does not write itself (a dashboard's passes): its
    ``where()``, ``col()``, unit ``group_source()`` and the binds every part shares."""
    return _Builder(plan)


def build(plan: Plan) -> Compiled:
    """The statement of a plan (after ``resolve`` has read its address and ward targets)."""
    missing = [i for i in plan.lookups if i not in plan.literals]
    if missing:
        raise RuntimeError(f"targets {missing} were not resolved")
    builder = _Builder(plan)
    return builder.groups() if plan.doc.grouped else builder.features()
