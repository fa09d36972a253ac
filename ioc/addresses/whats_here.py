"""What is here: one answer about a position (or a digital address) for an operator on the phone.

The ward (current and pre-2025), flood risk and nearby flood points, planning zone and land use,
the nearest hospital, school, pumping station and bus stop, and recent citizen reports nearby.
Every part comes from a catalog layer and only from layers the caller may read: a layer it may
not read is absent from the answer, exactly as if it did not exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from ioc.addresses.lookup import REVERSE_SQL, check_in_city, get_address
from ioc.addresses.registry import AddressSettings, _jsonable, address_feature, require_registry
from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog, Layer
from ioc.db.identifiers import quote_ident
from ioc.errors import InvalidParameter, LayerNotFound

Mode = Literal["contains", "nearest", "within"]


@dataclass(frozen=True)
class Section:
    """One part of the answer: where it goes, which layer, and how the layer is asked."""

    group: str | None  # answer key holding it (None: at the top level)
    key: str
    layer_id: str
    mode: Mode
    radius_m: float = 0.0  # within: the search radius
    limit: int = 1


SECTIONS: tuple[Section, ...] = (
    Section(None, "ward", "wards", "contains"),
    Section(None, "ward_2019", "wards_2019", "contains"),
    Section("flood", "risk_zones", "flood_risk_zones", "contains", limit=5),
    Section("flood", "points", "flood_points", "within", radius_m=500, limit=10),
    Section("planning", "zoning", "zoning", "contains", limit=5),
    Section("planning", "land_use", "landuse_osm", "contains", limit=5),
    Section("nearest", "hospital", "hospitals", "nearest"),
    Section("nearest", "school", "schools", "nearest"),
    Section("nearest", "pumping_station", "pumping_stations", "nearest"),
    Section("nearest", "bus_stop", "bus_stops", "nearest"),
    Section("reports", "recent", "reports_1022", "within", radius_m=300, limit=20),
)


def _point(layer: Layer) -> str:
    """The asked position ($1 lon, $2 lat) in the layer's SRID."""
    p = "ST_SetSRID(ST_MakePoint($1, $2), 4326)"
    return p if layer.srid == 4326 else f"ST_Transform({p}, {int(layer.srid)})"


def _geography(layer: Layer) -> str:
    geom = quote_ident(layer.geometry_column)
    return f"{geom}::geography" if layer.srid == 4326 else f"ST_Transform({geom}, 4326)::geography"


def section_sql(layer: Layer, section: Section) -> str:
    """The query of one section; the position is $1/$2, values only, identifiers from the catalog."""
    columns = "".join(f", {quote_ident(a.name)}" for a in layer.attributes)
    geom = quote_ident(layer.geometry_column)
    here = "ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography"
    distance = f"ST_Distance({_geography(layer)}, {here})"
    position = f"ST_AsGeoJSON(ST_Transform(ST_PointOnSurface({geom}), 4326), 7) AS position"
    ident = quote_ident(layer.id_column)
    if section.mode == "contains":
        return (
            f"SELECT {ident} AS fid{columns} FROM {layer.table_sql}"
            f" WHERE ST_Intersects({geom}, {_point(layer)}) ORDER BY {ident}"
            f" LIMIT {int(section.limit)}"
        )
    if section.mode == "nearest":
        # KNN in the layer's SRID picks candidates by the index; the 5 nearest are re-ranked in
        # metres on the spheroid (degrees of lon and lat differ in length).
        return (
            f"SELECT * FROM (SELECT {ident} AS fid{columns}, {distance} AS distance_m,"
            f" {position} FROM {layer.table_sql} ORDER BY {geom} <-> {_point(layer)}"
            f" LIMIT 5) s ORDER BY distance_m, fid LIMIT {int(section.limit)}"
        )
    # within: a box pre-filter (metres, or degrees with 1 m < 1e-5 degree here) uses the GiST
    # index, the exact geodesic distance decides.
    reach = section.radius_m if layer.srid != 4326 else section.radius_m / 100_000
    order = (
        f"{quote_ident(layer.time_column)} DESC NULLS LAST, distance_m"
        if layer.time_column
        else "distance_m"
    )
    return (
        f"SELECT *, count(*) OVER () AS total FROM (SELECT {ident} AS fid{columns},"
        f" {distance} AS distance_m, {position} FROM {layer.table_sql}"
        f" WHERE {geom} && ST_Expand({_point(layer)}, {float(reach)})) s"
        f" WHERE distance_m <= {float(section.radius_m)} ORDER BY {order}, fid"
        f" LIMIT {int(section.limit)}"
    )


def _feature(layer: Layer, row: Any, base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"layer": layer.id, "id": row["fid"]}
    out["properties"] = {a.name: _jsonable(row[a.name]) for a in layer.attributes}
    if "distance_m" in row.keys():
        out["distance_m"] = round(float(row["distance_m"]), 1)
        out["position"] = json.loads(row["position"])["coordinates"]
    out["href"] = f"{base_url}/collections/{layer.id}/items/{row['fid']}"
    return out


async def what_is_here(
    conn,
    catalog: Catalog,
    principal: Principal,
    settings: AddressSettings,
    *,
    lon: float | None = None,
    lat: float | None = None,
    code: str | None = None,
    base_url: str = "",
) -> dict[str, Any]:
    """Everything the caller may know about a position or a digital address, in one answer."""
    address = None
    if code is not None:
        require_registry(catalog, principal, settings)
        row = await get_address(conn, code)
        lon, lat = row["lon"], row["lat"]
        address = address_feature(row, base_url)
    if lon is None or lat is None:
        raise InvalidParameter(
            "Cần lon và lat, hoặc address / give lon and lat, or address.", parameter="lon,lat"
        )
    await check_in_city(conn, catalog, lon, lat)
    answer: dict[str, Any] = {"position": {"lon": lon, "lat": lat}}
    if address is None and _registry_readable(catalog, principal, settings):
        row = await conn.fetchrow(REVERSE_SQL, lon, lat)
        if row is not None and row["distance_m"] <= settings.reverse_radius_m:
            address = address_feature(row, base_url, distance_m=round(row["distance_m"], 1))
    if address is not None:
        answer["address"] = address
    visible = {layer.id: layer for layer in catalog.visible(principal)}
    consulted = []
    for section in SECTIONS:
        layer = visible.get(section.layer_id)
        if layer is None:
            continue
        consulted.append(layer.id)
        rows = await conn.fetch(section_sql(layer, section), lon, lat)
        value = _section_value(layer, section, rows, base_url)
        target = answer if section.group is None else answer.setdefault(section.group, {})
        target[section.key] = value
    answer["layers"] = consulted
    return answer


def _section_value(layer: Layer, section: Section, rows: list[Any], base_url: str) -> Any:
    features = [_feature(layer, r, base_url) for r in rows]
    if section.mode == "within":
        return {
            "radius_m": section.radius_m,
            "count": rows[0]["total"] if rows else 0,
            "items": features,
        }
    if section.limit == 1:
        return features[0] if features else None
    return features


def _registry_readable(catalog: Catalog, principal: Principal, settings: AddressSettings) -> bool:
    try:
        require_registry(catalog, principal, settings)
    except LayerNotFound:
        return False
    return True
