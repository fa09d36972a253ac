"""Streaming rows into a layer table with ``COPY … FROM STDIN`` (text format).

Each batch becomes one COPY: values rendered column by column with numpy, geometries as hex
EWKB carrying the layer's SRID, so a million rows never exist as Python objects at once.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np
import shapely
from psycopg2.extensions import connection as Connection

from ioc.db.identifiers import quote_ident
from ioc.db.tables import DATA_SCHEMA, table_ident
from layers.manifest import LayerManifest

NULL = "\\N"
# COPY text format: backslash, tab, newline and carriage return must be escaped.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


# Above this many rows, secondary indexes are dropped for the load and rebuilt after it: one
# bulk build is several times faster than a million random inserts into a btree and a GiST.
BULK_ROWS = 100_000


def suspend_indexes(conn: Connection, layer_id: str, schema: str = DATA_SCHEMA) -> list[str]:
    """Drop a layer table's secondary indexes; returns their definitions to rebuild them."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            # to_regclass, not ::regclass: the planner may test the join before the schema
            # filter, on the history table's same-named indexes (data.x_hist_fid: an error).
            "JOIN pg_index x "
            "ON x.indexrelid = to_regclass(format('%%I.%%I', i.schemaname, i.indexname)) "
            "WHERE i.schemaname = %s AND i.tablename = %s AND NOT x.indisprimary",
            (schema, layer_id),
        )
        found = cur.fetchall()
        for name, _ in found:
            cur.execute(f"DROP INDEX {quote_ident(schema)}.{quote_ident(name)}")
    return [definition for _, definition in found]


def restore_indexes(conn: Connection, definitions: list[str]) -> None:
    """Rebuild indexes from the definitions PostgreSQL reported (pg_indexes.indexdef)."""
    with conn.cursor() as cur:
        for definition in definitions:
            cur.execute(definition)


def truncate_layer(conn: Connection, layer_id: str, schema: str = DATA_SCHEMA) -> None:
    """Empty a layer table and restart its fid sequence (so reseeding is repeatable)."""
    with conn.cursor() as cur:
        cur.execute(f"TRUNCATE {table_ident(layer_id, schema)} RESTART IDENTITY")


def render_column(column: np.ndarray, kind: str) -> np.ndarray:
    """One column as COPY text values (object array of str), nulls as \\N."""
    n = len(column)
    out = np.full(n, NULL, dtype=object)
    if kind in ("integer", "number"):
        values = np.asarray(column, dtype=float)
        ok = ~np.isnan(values)
        if kind == "integer":
            out[ok] = np.round(values[ok]).astype(np.int64).astype(str)
        else:
            out[ok] = values[ok].astype(str)  # shortest repr that round-trips
        return out
    if kind in ("date", "timestamp"):
        unit: Literal["D", "s"] = "D" if kind == "date" else "s"
        values = np.asarray(column).astype(f"datetime64[{unit}]")
        ok = ~np.isnat(values)
        # Timestamps are UTC instants; the trailing Z makes timestamptz read them as such.
        zone: Literal["UTC", "naive"] = "UTC" if kind == "timestamp" else "naive"
        out[ok] = np.datetime_as_string(values[ok], unit=unit, timezone=zone)
        return out
    if kind == "boolean":
        out[:] = [NULL if v is None or v != v else ("t" if v else "f") for v in column]
        return out
    text = [NULL if v is None or v != v else str(v) for v in column]
    joined = "".join(t for t in text if t is not NULL)
    if any(c in joined for c in "\\\t\n\r"):  # escape only the columns that need it
        text = [t if t is NULL else t.translate(_ESCAPES) for t in text]
    out[:] = text
    return out


def ewkb_hex(geoms: np.ndarray, srid: int) -> np.ndarray:
    """Hex EWKB with the SRID embedded, which PostGIS accepts as geometry text input."""
    return shapely.to_wkb(shapely.set_srid(geoms, srid), hex=True, include_srid=True)


def copy_batch(
    conn: Connection,
    manifest: LayerManifest,
    columns: dict[str, np.ndarray],
    geoms: np.ndarray,
    schema: str = DATA_SCHEMA,
) -> int:
    """COPY one batch of rows (attribute columns and geometries in the layer's SRID)."""
    n = len(geoms)
    if n == 0:
        return 0
    names = [a.name for a in manifest.attributes]
    rendered = [render_column(columns[a.name], a.type) for a in manifest.attributes]
    rendered.append(ewkb_hex(geoms, int(manifest.geometry.srid)))
    buffer = io.StringIO()
    buffer.writelines("\t".join(row) + "\n" for row in zip(*rendered, strict=True))
    buffer.seek(0)
    target = ", ".join(quote_ident(c) for c in [*names, "geom"])
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY {table_ident(manifest.id, schema)} ({target}) FROM STDIN", buffer)
    return n


def write_layer(
    conn: Connection,
    manifest: LayerManifest,
    batches: Iterable[tuple[dict[str, np.ndarray], np.ndarray]],
    total: int,
    progress: Callable[[str, int, int], None] | None = None,
    schema: str = DATA_SCHEMA,
) -> int:
    """Replace a layer's rows with the given batches in one transaction; returns the row count.

    On any error (or Ctrl-C) the transaction is rolled back, leaving the previous rows (and
    indexes) intact.
    """
    done = 0
    try:
        truncate_layer(conn, manifest.id, schema)
        suspended = suspend_indexes(conn, manifest.id, schema) if total >= BULK_ROWS else []
        if progress:
            progress(manifest.id, 0, total)
        for columns, geoms in batches:
            done += copy_batch(conn, manifest, columns, geoms, schema)
            if progress:
                progress(manifest.id, done, max(total, done))
        restore_indexes(conn, suspended)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return done
