"""Administrative units that queries group by, and the cache of which unit each feature is in.

HCMC's units changed twice: wards and districts before 2021 (``wards_2019``,
``districts_2019``), the 2021–2025 districts with Thủ Đức City (``districts_2024``), and since
1 July 2025 one level of 168 wards and communes (``wards``). A feature belongs to every unit its
geometry intersects (a road through three wards counts in each; a point on a shared boundary —
rare — in both), which is what a direct ``ST_Intersects`` join counts.

That join costs a point-in-polygon test per feature: ~3 s for a million reports. For layers with
at least ``IOC_QUERY_MEMBERSHIP_MIN_FEATURES`` features the pairs (feature, unit) are cached in
``ioc.unit_members``. Publishing never updates a row in place (a replace deletes and inserts new
ids), so a pair stays true while the row exists; a cached set is used while the layer's and the
units' versions are those it was built at and the rows with ``fid <= max_fid`` are still as many
(nothing deleted). Rows added since (realtime feeds insert without a publish) are joined live.
The job runner builds requested sets and rebuilds stale ones (``maintain``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ioc.catalog.layers import Catalog, Layer
from ioc.db.connection import Pool
from ioc.db.identifiers import quote_ident

log = logging.getLogger("ioc.units")

CACHEABLE_ORIGINS = ("manifest", "published", "derived")  # tables with a bigint ``fid``


@dataclass(frozen=True)
class UnitSet:
    """A kind of administrative unit: its layer, code and name attributes, result columns."""

    layer_id: str
    code: str
    name: str
    out_code: str
    out_name: str
    extra: tuple[tuple[str, str], ...] = ()  # (attribute, result column)
    label_vi: str = ""
    label_en: str = ""


UNITS: dict[tuple[str, str], UnitSet] = {
    ("ward", "current"): UnitSet(
        "wards",
        "ward_code",
        "name",
        "ward_code",
        "ward_name",
        label_vi="Phường, xã (từ 7/2025)",
        label_en="Ward (2025)",
    ),
    ("ward", "2019"): UnitSet(
        "wards_2019",
        "ward_code",
        "ward_name_ascii",
        "ward_code",
        "ward_name",
        (("district_code", "district_code"), ("district_name_ascii", "district_name")),
        label_vi="Phường, xã (trước 7/2025)",
        label_en="Ward (pre-2025)",
    ),
    ("district", "2019"): UnitSet(
        "districts_2019",
        "district_code",
        "district_name_ascii",
        "district_code",
        "district_name",
        label_vi="Quận, huyện (2019)",
        label_en="District (2019)",
    ),
    ("district", "2024"): UnitSet(
        "districts_2024",
        "district_code",
        "district_name",
        "district_code",
        "district_name",
        label_vi="Quận, huyện (2021–6/2025)",
        label_en="District (2021–2025)",
    ),
}


def transform(expr: str, src: int, dst: int) -> str:
    """``expr`` moved from SRID ``src`` to ``dst`` (unchanged when equal)."""
    return expr if src == dst else f"ST_Transform({expr}, {int(dst)})"


def join_condition(layer: Layer, units: Layer, t: str = "t", u: str = "u") -> str:
    """A feature of ``layer`` (alias ``t``) intersects a unit (alias ``u``), tested in the
    units' SRID so that their GiST index and PostGIS's cached prepared polygons serve it."""
    feature = transform(f"{t}.{quote_ident(layer.geometry_column)}", layer.srid, units.srid)
    return f"ST_Intersects({u}.{quote_ident(units.geometry_column)}, {feature})"


def cacheable(layer: Layer, min_features: int) -> bool:
    """True when per-unit groupings of the layer should use (and build) the cache."""
    return (
        layer.origin in CACHEABLE_ORIGINS
        and layer.id_column == "fid"
        and layer.feature_count >= min_features
    )


STATE_SQL = """
SELECT s.status, s.max_fid, s.member_rows, s.layer_version = l.version
       AND s.unit_version = u.version AS current
FROM ioc.unit_member_sets s
JOIN ioc.layers l ON l.id = s.layer_id
JOIN ioc.layers u ON u.id = s.unit_layer_id
WHERE s.layer_id = $1 AND s.unit_layer_id = $2
"""


async def cached_max_fid(conn, layer: Layer, units: Layer) -> int | None:
    """The ``max_fid`` of a usable cached set, or None (then the join is done live)."""
    row = await conn.fetchrow(STATE_SQL, layer.id, units.id)
    if row is None or row["status"] != "ready" or not row["current"]:
        return None
    fid = f"t.{quote_ident(layer.id_column)}"
    count = await conn.fetchval(
        f"SELECT count(*) FROM {layer.table_sql} t WHERE {fid} <= $1", row["max_fid"]
    )
    return row["max_fid"] if count == row["member_rows"] else None


REQUEST_SQL = """
INSERT INTO ioc.unit_member_sets (layer_id, unit_layer_id) VALUES ($1, $2)
ON CONFLICT (layer_id, unit_layer_id) DO UPDATE SET used_at = now()
WHERE ioc.unit_member_sets.used_at < now() - interval '10 minutes'
"""


async def request(pool: Pool, layer: Layer, units: Layer) -> None:
    """Say that the set is wanted: the runner builds it, and keeps it fresh while it is used."""
    await pool.execute(REQUEST_SQL, layer.id, units.id)


def members_sql(layer: Layer, units: Layer, binds, max_fid: int) -> str:
    """(fid, unit_fid) pairs of the layer: the cached ones, and live ones for rows added since."""
    t_id = f"t.{quote_ident(layer.id_column)}"
    u_id = f"u.{quote_ident(units.id_column)}"
    return (
        f"(SELECT m.fid, m.unit_fid FROM ioc.unit_members m WHERE m.layer_id = "
        f"{binds.add(layer.id, 'text')} AND m.unit_layer_id = {binds.add(units.id, 'text')}"
        f" UNION ALL SELECT {t_id}, {u_id} FROM {units.table_sql} u JOIN {layer.table_sql} t"
        f" ON {join_condition(layer, units)} WHERE {t_id} > {binds.add(max_fid, 'bigint')})"
    )


async def build(pool: Pool, layer: Layer, units: Layer, timeout_ms: int) -> int | None:
    """(Re)build one set in a transaction; None when another process is building it."""
    started = time.perf_counter()
    t_id = f"t.{quote_ident(layer.id_column)}"
    u_id = f"u.{quote_ident(units.id_column)}"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('statement_timeout', $1, true)", str(timeout_ms))
        await conn.execute(
            "INSERT INTO ioc.unit_member_sets (layer_id, unit_layer_id)"
            " VALUES ($1, $2) ON CONFLICT DO NOTHING",
            layer.id,
            units.id,
        )
        locked = await conn.fetchval(
            "SELECT 1 FROM ioc.unit_member_sets WHERE layer_id = $1 AND unit_layer_id = $2"
            " FOR UPDATE SKIP LOCKED",
            layer.id,
            units.id,
        )
        if locked is None:
            return None
        versions = dict(
            await conn.fetch(
                "SELECT id, version FROM ioc.layers WHERE id = ANY($1)", [layer.id, units.id]
            )
        )
        max_fid = await conn.fetchval(f"SELECT coalesce(max({t_id}), 0) FROM {layer.table_sql} t")
        await conn.execute(
            "DELETE FROM ioc.unit_members WHERE layer_id = $1 AND unit_layer_id = $2",
            layer.id,
            units.id,
        )
        inserted = await conn.execute(
            f"INSERT INTO ioc.unit_members (layer_id, unit_layer_id, fid, unit_fid)"
            f" SELECT $1, $2, {t_id}, {u_id} FROM {units.table_sql} u JOIN {layer.table_sql} t"
            f" ON {join_condition(layer, units)} WHERE {t_id} <= $3",
            layer.id,
            units.id,
            max_fid,
        )
        rows = await conn.fetchval(
            f"SELECT count(*) FROM {layer.table_sql} t WHERE {t_id} <= $1", max_fid
        )
        # Fresh statistics now, not when autovacuum gets to it: the planner's choice of join for
        # the first queries after a build depends on them (3.8 s against 0.4 s).
        await conn.execute("ANALYZE ioc.unit_members")
        ms = int((time.perf_counter() - started) * 1000)
        await conn.execute(
            "UPDATE ioc.unit_member_sets SET status = 'ready', layer_version = $3,"
            " unit_version = $4, max_fid = $5, member_rows = $6, built_at = now(), build_ms = $7,"
            " error = NULL WHERE layer_id = $1 AND unit_layer_id = $2",
            layer.id,
            units.id,
            versions.get(layer.id),
            versions.get(units.id),
            max_fid,
            rows,
            ms,
        )
    log.info(
        "unit membership built",
        extra={"layer": layer.id, "units": units.id, "ms": ms, "pairs": inserted},
    )
    return ms


DUE_SQL = """
SELECT s.layer_id, s.unit_layer_id FROM ioc.unit_member_sets s
JOIN ioc.layers l ON l.id = s.layer_id JOIN ioc.layers u ON u.id = s.unit_layer_id
WHERE s.used_at > now() - interval '7 days' AND (
      s.status = 'pending'
   OR s.built_at < now() - make_interval(secs => $1)
   OR (s.status = 'ready' AND (s.layer_version <> l.version OR s.unit_version <> u.version)))
ORDER BY s.used_at DESC
"""


async def maintain(
    pool: Pool, catalog: Catalog, *, max_age_s: int, timeout_ms: int, tail_share: float = 0.05
) -> list[tuple[str, str]]:
    """Build pending sets and rebuild stale ones: old, built at other versions, rows deleted
    since, or a long tail of rows joined live."""
    layers = {layer.id: layer for layer in catalog}
    due = [tuple(r) for r in await pool.fetch(DUE_SQL, float(max_age_s))]
    for row in await pool.fetch(
        "SELECT layer_id, unit_layer_id, max_fid, member_rows FROM"
        " ioc.unit_member_sets WHERE status = 'ready'"
        " AND used_at > now() - interval '7 days'"
    ):
        layer = layers.get(row["layer_id"])
        if layer is None or (row["layer_id"], row["unit_layer_id"]) in due:
            continue
        t_id = f"t.{quote_ident(layer.id_column)}"
        counts = await pool.fetchrow(
            f"SELECT count(*) FILTER (WHERE {t_id} > $1) AS tail, count(*) FILTER (WHERE"
            f" {t_id} <= $1) AS kept FROM {layer.table_sql} t",
            row["max_fid"],
        )
        deleted = counts["kept"] != row["member_rows"]
        if deleted or counts["tail"] > max(1000, tail_share * (row["member_rows"] or 0)):
            due.append((row["layer_id"], row["unit_layer_id"]))
    built = []
    for layer_id, unit_id in due:
        layer, units = layers.get(layer_id), layers.get(unit_id)
        if layer is None or units is None:
            continue
        try:
            if await build(pool, layer, units, timeout_ms) is not None:
                built.append((layer_id, unit_id))
        except Exception as exc:  # one bad layer must not stop the others
            log.warning("unit membership failed", extra={"layer": layer_id, "error": str(exc)})
            await pool.execute(
                "UPDATE ioc.unit_member_sets SET status = 'failed', error = $3,"
                " built_at = now() WHERE layer_id = $1 AND unit_layer_id = $2",
                layer_id,
                unit_id,
                str(exc)[:500],
            )
    return built
