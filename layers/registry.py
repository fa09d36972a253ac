"""Writing the layer registry: manifest sync, statistics, registering existing tables."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ioc.catalog.access import ACCESS_LEVELS
from ioc.db.connection import PgConn, scalar
from ioc.db.identifiers import qualified, quote_ident
from ioc.db.tables import DATA_SCHEMA, create_table
from ioc.errors import Conflict, InvalidParameter, LayerNotFound

if TYPE_CHECKING:
    from layers.manifest import LayerManifest

UPSERT_SQL = """
INSERT INTO ioc.layers (id, schema_name, table_name, geometry_column, id_column, geometry_type,
    srid, title_vi, title_en, description_vi, description_en, domain, department, access, cadence,
    origin, manifest)
VALUES (%(id)s, %(schema_name)s, %(table_name)s, %(geometry_column)s, %(id_column)s,
    %(geometry_type)s, %(srid)s, %(title_vi)s,
    %(title_en)s, %(description_vi)s, %(description_en)s, %(domain)s, %(department)s, %(access)s,
    %(cadence)s, %(origin)s, %(manifest)s)
ON CONFLICT (id) DO UPDATE SET
    geometry_type = EXCLUDED.geometry_type, srid = EXCLUDED.srid,
    title_vi = EXCLUDED.title_vi, title_en = EXCLUDED.title_en,
    description_vi = EXCLUDED.description_vi, description_en = EXCLUDED.description_en,
    domain = EXCLUDED.domain, department = EXCLUDED.department, access = EXCLUDED.access,
    cadence = EXCLUDED.cadence, manifest = EXCLUDED.manifest, updated_at = now()
WHERE ioc.layers.origin = 'manifest'
"""


def manifest_row(manifest: LayerManifest, origin: str) -> dict[str, Any]:
    """The registry row a manifest makes (``ioc.layers`` columns; the manifest as a dict)."""
    return {
        "id": manifest.id,
        "schema_name": DATA_SCHEMA,
        "table_name": manifest.id,
        "geometry_column": "geom",
        "id_column": "fid",
        "geometry_type": manifest.geometry.type,
        "srid": manifest.geometry.srid,
        "title_vi": manifest.title.vi,
        "title_en": manifest.title.en,
        "description_vi": manifest.description.vi,
        "description_en": manifest.description.en,
        "domain": manifest.domain,
        "department": manifest.department,
        "access": manifest.access,
        "cadence": manifest.cadence,
        "origin": origin,
        "manifest": manifest.model_dump(mode="json", exclude_none=True),
    }


def _upsert(cur, manifest: LayerManifest, origin: str) -> None:
    create_table(cur, manifest)
    row = manifest_row(manifest, origin)
    cur.execute(UPSERT_SQL, {**row, "manifest": json.dumps(row["manifest"], ensure_ascii=False)})


def sync_manifests(
    conn: PgConn, manifests: Iterable[LayerManifest], progress: Callable[[str], None] | None = None
) -> int:
    """Create missing layer tables and upsert registry rows; one transaction. Returns the count.

    Only rows that came from manifests are updated: a published or registered layer with the
    same id is left alone, and a soft-deleted layer stays deleted.
    """
    count = 0
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(DATA_SCHEMA)}")
        for manifest in manifests:
            _upsert(cur, manifest, "manifest")
            count += 1
            if progress:
                progress(manifest.id)
    conn.commit()
    return count


def create_layer(conn: PgConn, manifest: LayerManifest, *, commit: bool = True) -> None:
    """Create a new published layer (table + registry row); Conflict when the id is taken.
    ``commit=False`` leaves both in the caller's transaction (with the layer's first data).

    One sentence for every reason an id is taken (a layer the caller sees, one hidden from
    them, a soft-deleted one, a bare table): a restricted layer's existence must not leak."""
    with conn.cursor() as cur:
        # Two creates of one id wait for each other here (until the first's transaction ends,
        # which may hold its whole first upload): the second then sees the id taken.
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext('ioc.layer.create'), hashtext(%s))",
            (manifest.id,),
        )
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM ioc.layers WHERE id = %s) OR to_regclass(%s) IS NOT NULL",
            (manifest.id, f"{quote_ident(DATA_SCHEMA)}.{quote_ident(manifest.id)}"),
        )
        if scalar(cur):
            raise Conflict(
                f"The id '{manifest.id}' is not available; choose another.", parameter="id"
            )
        _upsert(cur, manifest, "published")
    if commit:
        conn.commit()


def soft_delete(conn: PgConn, layer_id: str) -> None:
    """Hide a layer from the catalog; its table and versions are kept for restore by an admin.
    In the caller's transaction (with its change event and audit row)."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE ioc.layers SET deleted_at = now(), updated_at = now()"
            " WHERE id = %s AND deleted_at IS NULL",
            (layer_id,),
        )
        if cur.rowcount != 1:
            raise LayerNotFound(f"There is no layer '{layer_id}'.")


STATS_SQL = """
WITH s AS (SELECT count(*) AS n, ST_SetSRID(ST_Extent({geom})::geometry, %s) AS e FROM {table})
SELECT n, ST_XMin(t), ST_YMin(t), ST_XMax(t), ST_YMax(t)
FROM s, LATERAL (SELECT ST_Transform(e, 4326) AS t) wgs84
"""


def update_stats(
    cur, layer_id: str, *, bump_version: bool = True, metadata: dict[str, Any] | None = None
) -> int:
    """Recount a layer and recompute its WGS 84 extent inside the caller's transaction."""
    cur.execute(
        "SELECT schema_name, table_name, geometry_column, srid FROM ioc.layers WHERE id = %s",
        (layer_id,),
    )
    row = cur.fetchone()
    if row is None:
        raise LayerNotFound(f"There is no layer '{layer_id}'.")
    schema, table, geom, srid = row
    cur.execute(STATS_SQL.format(table=qualified(schema, table), geom=quote_ident(geom)), (srid,))
    stats = cur.fetchone()
    count = stats[0] if stats else 0
    extent = list(stats[1:]) if stats and stats[1] is not None else None
    cur.execute(
        "UPDATE ioc.layers SET feature_count = %s, extent = %s, last_update = now(),"
        " updated_at = now(), version = version + %s, metadata = metadata || %s::jsonb"
        " WHERE id = %s",
        (
            count,
            extent,
            1 if bump_version else 0,
            json.dumps(metadata or {}, ensure_ascii=False),
            layer_id,
        ),
    )
    return count


def bump_stats(
    cur, layer_id: str, added: int, box: tuple[float, float, float, float] | None
) -> int:
    """Count and extent of a write kept without a scan of the layer (a full recount takes
    ~50 s on a million rows): the count moves by ``added`` (negative for deletes) and the
    WGS 84 extent grows to cover ``box``; it never shrinks (a publish recomputes it exactly).
    Stamps last_update and bumps the version, in the caller's transaction."""
    x0, y0, x1, y1 = box or (None, None, None, None)
    cur.execute(
        """UPDATE ioc.layers SET feature_count = greatest(feature_count + %(n)s, 0),
             extent = CASE WHEN %(x0)s::float8 IS NULL THEN extent
                           WHEN extent IS NULL THEN ARRAY[%(x0)s, %(y0)s, %(x1)s, %(y1)s]::float8[]
                           ELSE ARRAY[least(extent[1], %(x0)s), least(extent[2], %(y0)s),
                                      greatest(extent[3], %(x1)s), greatest(extent[4], %(y1)s)]
                      END,
             last_update = now(), updated_at = now(), version = version + 1
           WHERE id = %(id)s RETURNING feature_count""",
        {"n": added, "id": layer_id, "x0": x0, "y0": y0, "x1": x1, "y1": y1},
    )
    row = cur.fetchone()
    if row is None:
        raise LayerNotFound(f"There is no layer '{layer_id}'.")
    return int(row[0])


def refresh_stats(
    conn: PgConn,
    layer_id: str,
    *,
    bump_version: bool = True,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Recount a layer, recompute its extent, stamp last_update (and bump its version); commit."""
    with conn.cursor() as cur:
        count = update_stats(cur, layer_id, bump_version=bump_version, metadata=metadata)
    conn.commit()
    return count


INTROSPECT_SQL = """
SELECT f_geometry_column, type, srid FROM geometry_columns
WHERE f_table_schema = %s AND f_table_name = %s
"""
COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
PKEY_SQL = """
SELECT a.attname FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = to_regclass(%s) AND i.indisprimary
"""
_GEOMETRY_TYPES = {
    t.upper(): t
    for t in ("Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon")
}
_TYPE_MAP = {
    "integer": "integer",
    "bigint": "integer",
    "smallint": "integer",
    "numeric": "number",
    "double precision": "number",
    "real": "number",
    "boolean": "boolean",
    "date": "date",
    "timestamp with time zone": "timestamp",
    "timestamp without time zone": "timestamp",
}


def add_table(
    conn: PgConn,
    schema: str,
    table: str,
    *,
    layer_id: str,
    access: str = "internal",
    department: str = "science_tech",
    domain: str = "registered",
    title: str | None = None,
) -> None:
    """Register an existing PostGIS table as a layer (origin 'registered')."""
    if access not in ACCESS_LEVELS:
        raise InvalidParameter(
            f"Unknown access level '{access}': use public, internal or restricted."
        )
    regclass = qualified(schema, table)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM ioc.layers WHERE id = %s", (layer_id,))
        if cur.fetchone():
            raise Conflict(f"A layer with id '{layer_id}' already exists.")
        cur.execute(INTROSPECT_SQL, (schema, table))
        geoms = cur.fetchall()
        if not geoms:
            raise InvalidParameter(f"{schema}.{table} has no geometry column (or does not exist).")
        geom_column, geom_type, srid = geoms[0]
        cur.execute(PKEY_SQL, (regclass,))
        pkey = [r[0] for r in cur.fetchall()]
        if len(pkey) != 1:
            raise InvalidParameter(
                f"{schema}.{table} needs a single-column primary key to be served."
            )
        cur.execute(COLUMNS_SQL, (regclass,))
        attributes = [
            {"name": name, "type": _TYPE_MAP.get(pgtype, "text"), "label": {"vi": name, "en": name}}
            for name, pgtype in cur.fetchall()
            if name not in (geom_column, pkey[0])
        ]
        manifest: dict[str, Any] = {
            "id": layer_id,
            "title": {"vi": title or table, "en": title or table},
            "description": {"vi": "", "en": ""},
            "domain": domain,
            "department": department,
            "geometry": {"type": _GEOMETRY_TYPES.get(geom_type.upper(), "Geometry"), "srid": srid},
            "access": access,
            "cadence": "static",
            "attributes": attributes,
            "zoom": {"min": 0, "max": 22},
            "style": {"color": "#3388ff", "legend": []},
            "source": {"name": f"{schema}.{table}", "licence": "unknown"},
        }
        cur.execute(
            "INSERT INTO ioc.layers (id, schema_name, table_name, geometry_column, id_column,"
            " geometry_type, srid, title_vi, title_en, domain, department, access, origin, manifest)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'registered', %s)",
            (
                layer_id,
                schema,
                table,
                geom_column,
                pkey[0],
                manifest["geometry"]["type"],
                srid,
                manifest["title"]["vi"],
                manifest["title"]["en"],
                domain,
                department,
                access,
                json.dumps(manifest, ensure_ascii=False),
            ),
        )
    conn.commit()
    refresh_stats(conn, layer_id, bump_version=False)
