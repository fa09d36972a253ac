"""Checking a query document against the catalog, the caller's rights and the limits (``analyse``),
and reading the address and ward targets it names (``resolve``): the ``Plan`` that
``ioc.query.sql`` writes as one statement.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
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
from ioc.features.binds import attribute_or_400
from ioc.query.model import QueryDoc, QuerySettings, SpatialPredicate
from ioc.query.units import UNITS, UnitSet

CITY_TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # UTC+7, no daylight saving
CITY_TZ_NAME = "Asia/Ho_Chi_Minh"
ID, GEOM, ORD = "__ioc_id", "__ioc_geom", "__ioc_n"  # technical columns of every row set
ADDRESS_LAYER, ADDRESS_ATTRIBUTE = "digital_addresses", "code"
_NUMERIC = ("integer", "number")
_POLYGONS = ("Polygon", "MultiPolygon")
_LINES = ("LineString", "MultiLineString")
_GEOMETRY_TYPES = (
    "Point",
    "LineString",
    "Polygon",
    "MultiPoint",
    "MultiLineString",
    "MultiPolygon",
)


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
