"""Building the address registry (psycopg2): loading the address layer, the search vocabulary of
ward and street names, the registry version, and the links from features of point layers to the
address they belong to. Run after seeding, after an import and when a point layer is published.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from ioc.addresses.normalise import fold
from ioc.addresses.registry import (
    LAYER_SOURCE_PREFIX,
    META_KEY,
    WARDS_2019_LAYER,
    WARDS_LAYER,
    AddressSettings,
    _layer,
)
from ioc.catalog.layers import Catalog, Layer, load_catalog_sync
from ioc.db.connection import PgConn, scalar
from ioc.db.identifiers import quote_ident

# Registry field -> accepted attribute names in the address layer, first found wins.
LAYER_FIELDS: dict[str, tuple[str, ...]] = {
    "code": ("code", "address_code", "ma_dia_chi"),
    "house_number": ("house_number", "so_nha"),
    "street": ("street", "street_name", "ten_duong"),
    "ward_code": ("ward_code", "ward_code_2025"),
    "ward_code_2019": ("ward_code_2019", "old_ward_code"),
    "building_id": ("building_id",),
    "parcel_id": ("parcel_id",),
    "valid_from": ("valid_from",),
    "valid_to": ("valid_to",),
}


def _pick(layer: Layer, names: Iterable[str]) -> str | None:
    return next((n for n in names if layer.attribute(n) is not None), None)


def _text_expr(layer: Layer, field: str) -> str:
    name = _pick(layer, LAYER_FIELDS[field])
    if name is None:
        return "NULL::date" if field in ("valid_from", "valid_to") else "NULL::text"
    if field in ("valid_from", "valid_to"):
        return f"t.{quote_ident(name)}::date"
    return f"nullif(btrim(t.{quote_ident(name)}::text), '')"


def ward_fill_sql(catalog: Catalog, target: str, column: str, layer_id: str) -> str | None:
    """UPDATE filling ``column`` of ``target`` (ward code) from the ward polygon under each point."""
    layer = _layer(catalog, layer_id)
    if layer is None or layer.attribute("ward_code") is None:
        return None
    geom = quote_ident(layer.geometry_column)
    point = "x.geom" if layer.srid == 4326 else f"ST_Transform(x.geom, {int(layer.srid)})"
    return (
        f"UPDATE {target} x SET {quote_ident(column)} = (SELECT w.ward_code::text FROM "
        f"{layer.table_sql} w WHERE ST_Intersects(w.{geom}, {point}) LIMIT 1)"
        f" WHERE x.{quote_ident(column)} IS NULL"
    )


def sync_from_layer(conn: PgConn, catalog: Catalog, settings: AddressSettings) -> dict[str, int]:
    """Load the address layer (demo city) into the registry; returns counts.

    Rows of other sources (an import from the national platform) are never overwritten: the
    platform is the authority. Layer rows whose code does not match the pattern are skipped.
    """
    layer = _layer(catalog, settings.layer_id)
    if layer is None or _pick(layer, LAYER_FIELDS["code"]) is None:
        return {"loaded": 0, "skipped": 0, "removed": 0}
    source = LAYER_SOURCE_PREFIX + layer.id
    exprs = {f: _text_expr(layer, f) for f in LAYER_FIELDS}
    geom = quote_ident(layer.geometry_column)
    point = (
        f"ST_PointOnSurface(t.{geom})"
        if layer.srid == 4326
        else f"ST_Transform(ST_PointOnSurface(t.{geom}), 4326)"
    )
    with conn.cursor() as cur:
        cur.execute(STAGE_DDL.format(stage="address_stage"))
        cur.execute(
            "INSERT INTO address_stage (code, house_number, street, ward_code, ward_code_2019,"
            " building_id, parcel_id, source, valid_from, valid_to, geom)"
            f" SELECT DISTINCT ON (1) {exprs['code']}, {exprs['house_number']}, {exprs['street']},"
            f" {exprs['ward_code']}, {exprs['ward_code_2019']}, {exprs['building_id']},"
            f" {exprs['parcel_id']}, %s, {exprs['valid_from']}, {exprs['valid_to']}, {point}"
            f" FROM {layer.table_sql} t WHERE {exprs['code']} ~ %s ORDER BY 1",
            (source, settings.code_pattern),
        )
        loaded = cur.rowcount
        cur.execute(f"SELECT count(*) FROM {layer.table_sql}")
        skipped = scalar(cur) - loaded
        for column, layer_id in (("ward_code", WARDS_LAYER), ("ward_code_2019", WARDS_2019_LAYER)):
            fill = ward_fill_sql(catalog, "address_stage", column, layer_id)
            if fill:
                cur.execute(fill)
        cur.execute("DELETE FROM address_stage WHERE ward_code IS NULL")
        skipped += cur.rowcount
        loaded -= cur.rowcount
        cur.execute(UPSERT_SQL.format(stage="address_stage"))
        cur.execute(
            "DELETE FROM ioc.addresses a WHERE a.source = %s AND NOT EXISTS"
            " (SELECT 1 FROM address_stage s WHERE s.code = a.code)",
            (source,),
        )
        removed = cur.rowcount
    conn.commit()
    return {"loaded": loaded, "skipped": skipped, "removed": removed}


STAGE_DDL = """CREATE TEMP TABLE {stage} (code text, house_number text, street text, ward_code text,
    ward_code_2019 text, building_id text, parcel_id text, source text, valid_from date,
    valid_to date, geom geometry(Point, 4326)) ON COMMIT DROP"""
# Authoritative rows (any source but a layer) are only replaced by rows of a non-layer source;
# unchanged rows are not rewritten (a reload of a million rows stays cheap).
UPSERT_SQL = """
INSERT INTO ioc.addresses AS a (code, house_number, street, ward_code, ward_code_2019, building_id,
    parcel_id, source, valid_from, valid_to, geom)
SELECT code, house_number, street, ward_code, ward_code_2019, building_id, parcel_id, source,
    valid_from, valid_to, geom FROM {stage}
ON CONFLICT (code) DO UPDATE SET house_number = EXCLUDED.house_number, street = EXCLUDED.street,
    ward_code = EXCLUDED.ward_code, ward_code_2019 = EXCLUDED.ward_code_2019,
    building_id = EXCLUDED.building_id, parcel_id = EXCLUDED.parcel_id, source = EXCLUDED.source,
    valid_from = EXCLUDED.valid_from, valid_to = EXCLUDED.valid_to, geom = EXCLUDED.geom,
    updated_at = now()
WHERE (starts_with(a.source, 'layer:') OR NOT starts_with(EXCLUDED.source, 'layer:'))
    AND (a.house_number, a.street, a.ward_code, a.ward_code_2019, a.building_id, a.parcel_id,
         a.source, a.valid_from, a.valid_to, a.geom)
    IS DISTINCT FROM (EXCLUDED.house_number, EXCLUDED.street, EXCLUDED.ward_code,
         EXCLUDED.ward_code_2019, EXCLUDED.building_id, EXCLUDED.parcel_id, EXCLUDED.source,
         EXCLUDED.valid_from, EXCLUDED.valid_to, EXCLUDED.geom)
"""


@lru_cache(maxsize=1)
def _package_units() -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str, str]]]:
    """Official names of HCMC units from ``vietnamadminunits``: 2025 code -> (short, full) and
    pre-2025 code -> (short, full, district). A fallback when no ward layer carries names."""
    path = resources.files("vietnamadminunits") / "data" / "dataset.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        new = {
            r[0]: (r[1], r[2])
            for r in db.execute(
                "SELECT wardCode, wardShort, ward FROM admin_units WHERE provinceCode = '79'"
            )
        }
        old = {
            r[0]: (r[1], r[2], r[3])
            for r in db.execute(
                "SELECT wardCode, wardShort, ward, district FROM admin_units_legacy"
                " WHERE provinceCode = '79'"
            )
        }
    return new, old


_UNIT_TYPES = {"ward": "Phường", "commune": "Xã", "township": "Thị trấn"}


def _ward_2019_names(code: str, attrs: dict[str, Any]) -> tuple[str, str, str | None]:
    """(name, full name, district) of a pre-2025 ward, Vietnamese where it can be trusted."""
    ascii_name = attrs.get("ward_name_ascii") or attrs.get("ward_name") or attrs.get("name")
    district = attrs.get("district_name") or attrs.get("district_name_ascii")
    vi = _package_units()[1].get(code)
    # The package knows the 2024 unit carrying this code: trust its Vietnamese name only when
    # it is the same name without diacritics (codes were reused by merged wards).
    if vi and (ascii_name is None or fold(vi[0]) == fold(str(ascii_name))):
        return vi[0], vi[1], _district_vi(district, vi[2])
    name = str(ascii_name or code)
    numbered = re.fullmatch(r"(?:ward|phuong)\s*(\d+)", fold(name))
    if numbered:
        name = f"Phường {numbered.group(1)}"
        return name, name, _district_vi(district, None)
    kind = _UNIT_TYPES.get(str(attrs.get("unit_level") or "ward").lower(), "Phường")
    full = name if fold(name).startswith(fold(kind)) else f"{kind} {name}"
    return name, full, _district_vi(district, None)


def _district_vi(district: Any, package: str | None) -> str | None:
    if package and (
        district is None or fold(str(district)).replace("district", "quan") in fold(package)
    ):
        return package
    if district is None:
        return package
    numbered = re.fullmatch(r"district\s*(\d+)", fold(str(district)))
    return f"Quận {numbered.group(1)}" if numbered else str(district)


def _ward_rows(
    conn: PgConn, catalog: Catalog, layer_id: str, codes: list[str]
) -> dict[str, dict[str, Any]]:
    """Attributes of the given wards of a ward layer."""
    layer = _layer(catalog, layer_id)
    if layer is None or layer.attribute("ward_code") is None or not codes:
        return {}
    columns = [a.name for a in layer.attributes]
    from psycopg2.extras import RealDictCursor

    with conn.cursor(cursor_factory=RealDictCursor) as cur:
        cur.execute(
            f"SELECT {', '.join(quote_ident(c) for c in columns)} FROM {layer.table_sql}"
            " WHERE ward_code::text = ANY(%s)",
            (codes,),
        )
        return {str(r["ward_code"]): dict(r) for r in cur.fetchall()}


def refresh_names(conn: PgConn, catalog: Catalog) -> dict[str, int]:
    """Rebuild the search vocabulary (streets, 2025 wards, 2019 wards) from the registry."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM ioc.address_names")
        cur.execute("""
            INSERT INTO ioc.address_names (kind, key, name, label, n)
            SELECT 'street', street_key, mode() WITHIN GROUP (ORDER BY street),
                   mode() WITHIN GROUP (ORDER BY street), count(*)
            FROM ioc.addresses WHERE street_key IS NOT NULL GROUP BY street_key""")
        counts = {"street": cur.rowcount}
        new_names, _ = _package_units()
        for kind, column, layer_id in (
            ("ward", "ward_code", WARDS_LAYER),
            ("ward_2019", "ward_code_2019", WARDS_2019_LAYER),
        ):
            cur.execute(
                f"SELECT {column}, count(*) FROM ioc.addresses"
                f" WHERE {column} IS NOT NULL GROUP BY 1"
            )
            used = dict(cur.fetchall())
            layer_rows = _ward_rows(conn, catalog, layer_id, list(used))
            rows = []
            for code, n in used.items():
                attrs = layer_rows.get(code, {})
                if kind == "ward":
                    short, full = new_names.get(code, (None, None))
                    name = attrs.get("name") or short or code
                    label = attrs.get("full_name") or full or name
                    district = None
                else:
                    name, label, district = _ward_2019_names(code, attrs)
                rows.append((kind, code, str(name), str(label), district, n))
            cur.executemany(
                "INSERT INTO ioc.address_names (kind, key, name, label, district, n)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )
            counts[kind] = len(rows)
    conn.commit()
    return counts


BUMP_SQL = """
WITH s AS (SELECT count(*) AS n, ST_Extent(geom) AS e FROM ioc.addresses)
INSERT INTO ioc.meta AS m (key, value)
SELECT %(key)s, jsonb_build_object('version', 1, 'count', s.n, 'bbox', CASE WHEN s.e IS NULL THEN NULL
       ELSE jsonb_build_array(ST_XMin(s.e), ST_YMin(s.e), ST_XMax(s.e), ST_YMax(s.e)) END,
       'refreshed_at', now())
FROM s
ON CONFLICT (key) DO UPDATE SET updated_at = now(), value = EXCLUDED.value
    || jsonb_build_object('version', coalesce((m.value ->> 'version')::int, 0) + 1)
RETURNING value
"""


def bump_version(conn: PgConn) -> dict[str, Any]:
    """Record that the registry changed: search vocabularies cached by servers are reloaded."""
    with conn.cursor() as cur:
        cur.execute(BUMP_SQL, {"key": META_KEY})
        value = scalar(cur)
    conn.commit()
    return value


# --- links from features to addresses ------------------------------------------------------

INTEGER_TYPES = {"bigint", "integer", "smallint"}


def point_layers(catalog: Catalog, settings: AddressSettings) -> list[Layer]:
    """Layers whose features are linked to addresses: every point layer but the addresses."""
    return [
        la
        for la in catalog
        if la.geometry_type in ("Point", "MultiPoint") and la.id != settings.layer_id
    ]


def _id_is_integer(cur, layer: Layer) -> bool:
    cur.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid ="
        " to_regclass(%s) AND attname = %s AND NOT attisdropped",
        (layer.table_sql, layer.id_column),
    )
    row = cur.fetchone()
    return row is not None and row[0] in INTEGER_TYPES


# The bbox pre-filter (in degrees, generous: 1 m < 1e-5 degree here) keeps the KNN scan from
# walking the whole index for a feature with no address nearby; the 3 nearest in degrees are
# re-ranked in metres on the spheroid.
LINK_SQL = """
INSERT INTO ioc.address_links (layer_id, fid, code, distance_m)
SELECT %(layer)s, t.fid, n.code, n.d
FROM (SELECT {id}::bigint AS fid, {point} AS g FROM {table} {where}) t
CROSS JOIN LATERAL (
    SELECT c.code, ST_Distance(c.geom::geography, t.g::geography) AS d
    FROM (SELECT a.code, a.geom FROM ioc.addresses a
          WHERE a.geom && ST_Expand(t.g, %(deg)s)
            AND (a.valid_to IS NULL OR a.valid_to >= current_date)
          ORDER BY a.geom <-> t.g LIMIT 3) c
    ORDER BY 2, 1 LIMIT 1) n
WHERE n.d <= %(dist)s
"""


def link_layer(
    conn: PgConn, layer: Layer, settings: AddressSettings, fids: Iterable[int] | None = None
) -> int:
    """Link the features of a point layer to their nearest valid address within the link
    distance; all of them, or only ``fids`` (features just changed). Returns the links made.

    Runs in the caller's transaction (publishing commits once): the caller commits.
    """
    geom = quote_ident(layer.geometry_column)
    point = f"ST_PointOnSurface({geom})"
    point = point if layer.srid == 4326 else f"ST_Transform({point}, 4326)"
    ident = quote_ident(layer.id_column)
    params: dict[str, Any] = {
        "layer": layer.id,
        "dist": settings.link_distance_m,
        "deg": settings.link_distance_m / 100_000,
    }
    with conn.cursor() as cur:
        if not _id_is_integer(cur, layer):
            return 0
        if fids is None:
            cur.execute("DELETE FROM ioc.address_links WHERE layer_id = %s", (layer.id,))
            where = f"WHERE {geom} IS NOT NULL"
        else:
            params["fids"] = [int(f) for f in fids]
            cur.execute(
                "DELETE FROM ioc.address_links WHERE layer_id = %s AND fid = ANY(%s)",
                (layer.id, params["fids"]),
            )
            where = f"WHERE {geom} IS NOT NULL AND {ident} = ANY(%(fids)s)"
        cur.execute(
            LINK_SQL.format(id=ident, point=point, table=layer.table_sql, where=where), params
        )
        return cur.rowcount


def unlink_layer(conn: PgConn, layer_id: str) -> int:
    """Forget the links of a layer (deleted layer); in the caller's transaction."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM ioc.address_links WHERE layer_id = %s", (layer_id,))
        return cur.rowcount


def link_layers(
    conn: PgConn,
    layers: Iterable[Layer],
    settings: AddressSettings,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Link several layers, committing after each (interrupting keeps the finished ones)."""
    counts = {}
    for layer in layers:
        try:
            counts[layer.id] = link_layer(conn, layer, settings)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        if progress:
            progress(layer.id, counts[layer.id])
    return counts


@dataclass
class IndexReport:
    """What building the address index did."""

    synced: dict[str, int]
    names: dict[str, int]
    links: dict[str, int]
    version: int
    count: int


def build_address_index(
    conn: PgConn,
    catalog: Catalog | None = None,
    *,
    settings: AddressSettings,
    link: bool = True,
    progress: Callable[[str, int], None] | None = None,
) -> IndexReport:
    """After seeding: load the address layer into the registry, rebuild the search vocabulary,
    record a new registry version and (``link``) link every point layer to its addresses."""
    catalog = catalog if catalog is not None else load_catalog_sync(conn)
    synced = sync_from_layer(conn, catalog, settings)
    return finish_registry_change(conn, catalog, settings, synced, link=link, progress=progress)


def finish_registry_change(
    conn: PgConn,
    catalog: Catalog,
    settings: AddressSettings,
    synced: dict[str, int],
    *,
    link: bool,
    progress: Callable[[str, int], None] | None = None,
) -> IndexReport:
    """Names, version and links after the registry changed (sync or import)."""
    names = refresh_names(conn, catalog)
    meta = bump_version(conn)
    links = link_layers(conn, point_layers(catalog, settings), settings, progress) if link else {}
    return IndexReport(synced, names, links, int(meta["version"]), int(meta["count"]))
