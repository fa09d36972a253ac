"""Layer history in the database: the table ``history.<layer id>`` and the triggers that fill it.

The history table has the layer table's columns, then ``valid_from`` and ``valid_to`` (the
half-open interval [valid_from, valid_to) of each state; ``'infinity'`` while current). The
statement-level triggers of ``sql/0010_history.sql`` keep it, so every writer is covered. Which
layers keep history, and for how long, is ``ioc.layer_history`` (synced from the manifests).
"""

from __future__ import annotations

from ioc.db.identifiers import qualified, quote_ident

HISTORY_SCHEMA = "history"
EVENTS = ("insert", "update", "delete", "truncate")
_PREFIX = "ioc_history_"
FILLFACTOR = 60  # as sql/0016_history_hot.sql


def history_ident(layer_id: str) -> str:
    """Quoted, schema-qualified history table of a layer."""
    return qualified(HISTORY_SCHEMA, layer_id)


def _trigger_sql(event: str, table: str) -> str:
    # Transition tables need one trigger per event (PostgreSQL refuses them on OR'ed events).
    referencing = {
        "insert": "REFERENCING NEW TABLE AS new_rows",
        "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "delete": "REFERENCING OLD TABLE AS old_rows",
        "truncate": "",
    }[event]
    return (
        f"CREATE TRIGGER {quote_ident(_PREFIX + event)} AFTER {event.upper()} ON {table} "
        f"{referencing} FOR EACH STATEMENT EXECUTE FUNCTION ioc.history_record()"
    )


def _typed_columns(cur, table: str) -> list[tuple[str, str]]:
    cur.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    )
    return [(name, kind) for name, kind in cur.fetchall()]


def _columns(cur, table: str) -> list[str]:
    return [name for name, _ in _typed_columns(cur, table)]


def sync_history(cur, layer_id: str, retention_days: int | None, schema: str) -> bool:
    """Make the database keep (``retention_days``) or stop keeping (None) a layer's history,
    in the caller's transaction; True when it has just started keeping it."""
    table = qualified(schema, layer_id)
    cur.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname LIKE %s",
        (table, _PREFIX.replace("_", "\\_") + "%"),
    )
    present = {row[0] for row in cur.fetchall()}
    if retention_days is None:
        # The history table is kept (an operator drops it); 'at' and …/history stop answering.
        for name in sorted(present):
            cur.execute(f"DROP TRIGGER {quote_ident(name)} ON {table}")
        cur.execute("DELETE FROM ioc.layer_history WHERE layer_id = %s", (layer_id,))
        return False
    # A history table whose columns are not the live table's (the layer was deleted and
    # re-created with others) cannot take its rows: it is set aside and history starts afresh.
    started = _set_aside_stale(cur, layer_id, table) or len(present) < len(EVENTS)
    _create_table(cur, layer_id, table)
    cur.execute(
        "INSERT INTO ioc.layer_history (layer_id, retention_days) VALUES (%s, %s)"
        " ON CONFLICT (layer_id) DO UPDATE SET retention_days = EXCLUDED.retention_days,"
        " started_at = CASE WHEN %s THEN now() ELSE ioc.layer_history.started_at END",
        (layer_id, int(retention_days), started),
    )
    if started:
        for event in EVENTS:
            if _PREFIX + event not in present:
                cur.execute(_trigger_sql(event, table))
        _reconcile(cur, layer_id, table)
    return started


def _set_aside_stale(cur, layer_id: str, table: str) -> bool:
    """Rename ``history.<id>`` to ``history.<id>_old_<UTC time>`` when its columns (without the
    interval) differ from the live table's, and drop its indexes (their names are the fresh
    table's); True when it did. The old states stay for an operator to read or drop."""
    hist = history_ident(layer_id)
    kept = _typed_columns(cur, hist)
    if not kept or kept[:-2] == _typed_columns(cur, table):
        return False
    cur.execute(
        "SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = to_regclass(%s)",
        (hist,),
    )
    for (index,) in cur.fetchall():
        cur.execute(f"DROP INDEX {index}")  # regclass text: already quoted and qualified
    cur.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS')")
    aside = f"{layer_id[:40]}_old_{cur.fetchone()[0]}"
    cur.execute(f"ALTER TABLE {hist} RENAME TO {quote_ident(aside)}")
    return True


def _create_table(cur, layer_id: str, table: str) -> None:
    hist = history_ident(layer_id)
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(HISTORY_SCHEMA)}")
    # LIKE: the same columns in the same order, so the triggers copy rows with n.*. Room on
    # each page for the closed version of its rows: closing a state is then a HOT update.
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {hist} (LIKE {table}) WITH (fillfactor = {FILLFACTOR})"
    )
    cur.execute(f"ALTER TABLE {hist} ADD COLUMN IF NOT EXISTS valid_from timestamptz NOT NULL")
    cur.execute(
        f"ALTER TABLE {hist} ADD COLUMN IF NOT EXISTS valid_to timestamptz NOT NULL"
        " DEFAULT 'infinity'"
    )
    name = layer_id[:40]
    # valid_to, the one column a write changes, is in no index (nor index predicate): see
    # sql/0016_history_hot.sql.
    indexes = {
        # one feature's states; its latest is the one a write closes; 'at' walks its ids
        "fid": "(fid, valid_from)",
        "from": "(valid_from)",  # pruning: the states begun by a cutoff
        "geom": "USING gist (geom)",
    }
    for suffix, spec in indexes.items():
        cur.execute(
            f"CREATE INDEX IF NOT EXISTS {quote_ident(f'{name}_hist_{suffix}')} ON {hist} {spec}"
        )


def _reconcile(cur, layer_id: str, table: str) -> None:
    """History (re)starts now: open states that differ from the live rows close, and every
    live row without an open state gets one."""
    hist = history_ident(layer_id)
    cols = _columns(cur, table)
    live = ", ".join(f"l.{quote_ident(c)}" for c in cols)
    kept = ", ".join(f"h.{quote_ident(c)}" for c in cols)
    cur.execute(
        f"UPDATE {hist} h SET valid_to = greatest(now(), h.valid_from) WHERE"
        f" h.valid_to = 'infinity' AND NOT EXISTS (SELECT 1 FROM {table} l"
        f" WHERE l.fid = h.fid AND ({live}) IS NOT DISTINCT FROM ({kept}))"
    )
    cur.execute(
        f"INSERT INTO {hist} SELECT l.*, now(), 'infinity' FROM {table} l WHERE NOT EXISTS"
        f" (SELECT 1 FROM {hist} h WHERE h.fid = l.fid AND h.valid_to = 'infinity')"
    )
    # Statistics now: without them the triggers' first joins hash every open state instead
    # of probing the open-state index per written row.
    cur.execute(f"ANALYZE {hist}")
