"""Reading the address registry (asyncpg): an address by code, the nearest one to a point, the
ward under a point, the city check, and the features linked to an address. See docs/addresses.md.
"""

from __future__ import annotations

import json
from typing import Any

from ioc.addresses.registry import (
    ADDRESS_COLUMNS,
    ADDRESS_JOINS,
    CITY_BBOX,
    WARDS_LAYER,
    AddressNotFound,
    _jsonable,
    _layer,
    _outside,
    _point_sql,
    address_properties,
    check_lonlat,
)
from ioc.catalog.access import Principal, can_read
from ioc.catalog.layers import Catalog, Layer
from ioc.db.identifiers import quote_ident
from ioc.media import GEOJSON


async def ward_at(
    conn,
    catalog: Catalog,
    principal: Principal,
    lon: float,
    lat: float,
    layer_id: str = WARDS_LAYER,
) -> dict[str, Any] | None:
    """Attributes of the ward polygon (of a ward layer) containing the point, or None; None
    too when the caller may not read that layer (it does not exist for them)."""
    layer = _layer(catalog, layer_id)
    if layer is None or not can_read(principal, layer):
        return None
    columns = [a.name for a in layer.attributes]
    select = ", ".join(quote_ident(c) for c in columns) or "1"
    row = await conn.fetchrow(
        f"SELECT {select} FROM {layer.table_sql} WHERE ST_Intersects({quote_ident(layer.geometry_column)},"
        f" {_point_sql(layer, '$1', '$2')}) LIMIT 1",
        lon,
        lat,
    )
    return {c: _jsonable(row[c]) for c in columns} if row else None


async def check_in_city(
    conn, catalog: Catalog, lon: float, lat: float, parameter: str = "lon,lat"
) -> None:
    """OutsideCity unless the point lies in a ward of the city (the ``wards`` layer)."""
    check_lonlat(lon, lat, parameter)
    wards = _layer(catalog, WARDS_LAYER)
    box = wards.extent if wards and wards.extent else CITY_BBOX
    if not (box[0] <= lon <= box[2] and box[1] <= lat <= box[3]):
        raise _outside(lon, lat, parameter)
    if wards is not None and wards.feature_count > 0:
        found = await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {wards.table_sql} WHERE ST_Intersects("
            f"{quote_ident(wards.geometry_column)}, {_point_sql(wards, '$1', '$2')}))",
            lon,
            lat,
        )
        if not found:
            raise _outside(lon, lat, parameter)


async def get_address(conn, code: str) -> Any:
    """The address row for a code, or AddressNotFound."""
    row = await conn.fetchrow(
        f"SELECT {ADDRESS_COLUMNS} FROM ioc.addresses a {ADDRESS_JOINS} WHERE a.code = $1", code
    )
    if row is None:
        raise AddressNotFound(
            f"Không có địa chỉ số '{code}' / there is no digital address '{code}'.",
            parameter="code",
        )
    return row


REVERSE_SQL = f"""
SELECT {ADDRESS_COLUMNS}, ST_Distance(a.geom::geography, p.g::geography) AS distance_m
FROM (SELECT ST_SetSRID(ST_MakePoint($1, $2), 4326) AS g) p
CROSS JOIN LATERAL (
    SELECT * FROM ioc.addresses a
    WHERE (a.valid_to IS NULL OR a.valid_to >= current_date)
    ORDER BY a.geom <-> p.g LIMIT 8) a
{ADDRESS_JOINS}
ORDER BY distance_m, a.code LIMIT 1
"""


async def reverse_geocode(
    conn, catalog: Catalog, principal: Principal, lon: float, lat: float, radius_m: float
) -> tuple[Any, dict[str, Any] | None]:
    """The nearest valid address (KNN on the point, then exact metres) and the ward polygon
    containing the position (None unless the caller may read the ward layer); AddressNotFound
    beyond ``radius_m``."""
    await check_in_city(conn, catalog, lon, lat)
    # KNN '<->' on lon/lat degrees ranks by planar degrees; the 8 nearest are re-ranked in metres
    # on the spheroid, which is exact at this latitude (a degree of lon is 0.98 of one of lat).
    row = await conn.fetchrow(REVERSE_SQL, lon, lat)
    if row is None or row["distance_m"] > radius_m:
        raise AddressNotFound(
            f"Không có địa chỉ số trong bán kính {radius_m:g} m / no digital "
            f"address within {radius_m:g} m.",
            parameter="lon,lat",
        )
    return row, await ward_at(conn, catalog, principal, lon, lat)


async def linked_features(
    conn, catalog: Catalog, principal: Principal, code: str, base_url: str = "", limit: int = 500
) -> list[dict[str, Any]]:
    """GeoJSON features linked to an address, from the layers the caller may read only."""
    rows = await conn.fetch(
        "SELECT layer_id, fid, distance_m FROM ioc.address_links WHERE code = $1"
        " ORDER BY layer_id, distance_m, fid LIMIT $2",
        code,
        limit,
    )
    by_layer: dict[str, dict[int, float]] = {}
    for r in rows:
        by_layer.setdefault(r["layer_id"], {})[r["fid"]] = r["distance_m"]
    visible = {layer.id: layer for layer in catalog.visible(principal)}
    features = []
    for layer_id, fids in by_layer.items():
        layer = visible.get(layer_id)
        if layer is None:  # a layer the caller may not read does not exist for it
            continue
        columns = [a.name for a in layer.attributes]
        select = "".join(f", {quote_ident(c)}" for c in columns)
        geom = quote_ident(layer.geometry_column)
        found = await conn.fetch(
            f"SELECT {quote_ident(layer.id_column)} AS fid{select},"
            f" ST_AsGeoJSON(ST_Transform({geom}, 4326), 7) AS geometry FROM {layer.table_sql}"
            f" WHERE {quote_ident(layer.id_column)} = ANY($1::bigint[])"
            f" ORDER BY {quote_ident(layer.id_column)}",
            list(fids),
        )
        for f in found:
            features.append(
                {
                    "type": "Feature",
                    "id": f"{layer_id}.{f['fid']}",
                    "geometry": json.loads(f["geometry"]),
                    "properties": {c: _jsonable(f[c]) for c in columns}
                    | {
                        "layer": layer_id,
                        "layer_title": {"vi": layer.title_vi, "en": layer.title_en},
                        "distance_m": round(float(fids[f["fid"]]), 1),
                    },
                    "links": [
                        {
                            "rel": "item",
                            "type": GEOJSON,
                            "href": f"{base_url}/collections/{layer_id}/items/{f['fid']}",
                        }
                    ],
                }
            )
    return features


FEATURE_ADDRESSES_SQL = f"""
SELECT {ADDRESS_COLUMNS}, l.distance_m
FROM ioc.address_links l JOIN ioc.addresses a ON a.code = l.code {ADDRESS_JOINS}
WHERE l.layer_id = $1 AND l.fid = $2 ORDER BY l.distance_m, a.code LIMIT $3
"""


async def feature_addresses(
    conn, guard: Any, principal: Principal, layer: Layer, feature_id: str, limit: int = 20
) -> list[dict]:
    """The digital addresses linked to one feature (code, address, distance), nearest first;
    empty when the caller may not read the address layer (``guard``, see
    registry.address_guard) or for an id that is not an integer (links use integer ids)."""
    if not can_read(principal, guard):
        return []
    try:
        fid = int(feature_id)
    except ValueError:
        return []
    if not -(2**63) <= fid < 2**63:  # beyond bigint: no feature has it
        return []
    rows = await conn.fetch(FEATURE_ADDRESSES_SQL, layer.id, fid, limit)
    return [address_properties(r) | {"distance_m": round(float(r["distance_m"]), 1)} for r in rows]


def address_code_filter(
    layer: Layer, layer_param: str, code_param: str, alias: str | None = None
) -> str:
    """SQL condition keeping the features of ``layer`` linked to one address code.

    For the items endpoint (``?address=CODE``): the caller binds the layer id and the code under
    the given placeholders (e.g. ``binds.add(layer.id, "text")``); ``alias`` qualifies the id
    column of the layer table.
    """
    ident = quote_ident(layer.id_column)
    column = f"{quote_ident(alias)}.{ident}" if alias else ident
    return (
        f"{column} IN (SELECT l.fid FROM ioc.address_links l"
        f" WHERE l.layer_id = {layer_param} AND l.code = {code_param})"
    )
