"""Dashboard rows on the write path (sql/0021) and off the request path (ioc.dashboards.rows).

* An UPDATE looks units up only for rows that moved: rows in the same place keep their unit
  ids even when the unit layers cannot be read, rows whose copied columns did not change are
  not written (their ``xmin`` is kept), and after status changes, moves and mixed batches the
  copy is still exactly a fresh build.
* While the copy is being built (the build's lock held), a dashboard request does not wait: it
  is answered from the layer itself, its counts those of direct SQL; a server that starts
  builds the copy without any request.
"""

from __future__ import annotations

from datetime import datetime

import psycopg2
import pytest
from fastapi.testclient import TestClient

from ioc.dashboards import panels
from tests.http import test_dashboard_rows as rows_tests
from tests.http.test_dashboard_rows import BOARD, HOLD, UNIT_LAYERS, differences
from tests.http.test_dashboards import CITY, data, sql_rows
from tests.polling import wait_until

# The rows tests' fixtures: an operator's headers, the copy's table.
keys, operator, table = rows_tests.keys, rows_tests.operator, rows_tests.table

PICK = "SELECT fid FROM data.reports_1022 ORDER BY fid LIMIT 40"


def picked(db) -> list[int]:
    with db.cursor() as cur:
        cur.execute(PICK)
        return [r[0] for r in cur.fetchall()]


def copied(db, table: str, fids: list[int]) -> dict[int, tuple]:
    """Each copy row's xmin and the rest of it, by fid."""
    with db.cursor() as cur:
        cur.execute(f"SELECT fid, xmin::text, t.* FROM {table} t WHERE fid = ANY(%s)", (fids,))
        return {r[0]: r[1:] for r in cur.fetchall()}


def test_updates_keep_the_copy_a_fresh_build(db, table):
    fids = picked(db)
    status, moved, other = fids[:10], fids[10:20], fids[20:30]
    try:
        before = copied(db, table, fids)
        with db.cursor() as cur:
            # Status only, a new value among them (its code is made by the write).
            cur.execute(
                "UPDATE data.reports_1022 SET status = CASE WHEN fid %% 2 = 0 THEN 'đã đóng'"
                " ELSE 'chờ thử nghiệm' END, resolved_at = reported_at + interval '3 hours'"
                " WHERE fid = ANY(%s)",
                (status,),
            )
            assert differences(db, table) == (0, 0)
            cur.execute(
                "UPDATE data.reports_1022 SET geom = ST_Translate(geom, 0.015, -0.01)"
                " WHERE fid = ANY(%s)",
                (moved,),
            )
            assert differences(db, table) == (0, 0)
            # One batch: moved with a new status, status only, a column not copied, unchanged.
            cur.execute(
                "UPDATE data.reports_1022 SET"
                " geom = CASE WHEN fid = ANY(%s) THEN ST_Translate(geom, -0.02, 0.01) ELSE geom END,"
                " status = CASE WHEN fid = ANY(%s) THEN 'mới' ELSE status END,"
                " report_no = CASE WHEN fid = ANY(%s) THEN report_no || '-x' ELSE report_no END"
                " WHERE fid = ANY(%s)",
                (moved[:5], moved[:5] + status[:5], other[:5], moved + status + other),
            )
            assert differences(db, table) == (0, 0)
            # Ids that change: one row's id is new, the old one gone.
            cur.execute(
                "UPDATE data.reports_1022 SET fid = fid + 900000000 WHERE fid = %s", (fids[30],)
            )
            assert differences(db, table) == (0, 0)
        after = copied(db, table, fids)
        # Rows whose copied columns did not change were not written at all.
        assert all(after[f] == before[f] for f in other)
        assert all(after[f][0] != before[f][0] for f in status + moved)
    finally:
        db.rollback()


def unit_tables(db) -> list[str]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT format('%%I.%%I', schema_name, table_name) FROM ioc.layers WHERE id = ANY(%s)",
            (UNIT_LAYERS,),
        )
        return [r[0] for r in cur.fetchall()]


def test_a_status_change_does_not_look_units_up(db, table):
    """With the unit layers' tables gone (renamed in the transaction), a status change still
    writes and keeps the rows' unit ids; a move cannot (the lookup is what needs them)."""
    fids = picked(db)[:20]
    units = ", ".join(f"u{i}, m{i}" for i in range(1, len(UNIT_LAYERS) + 1))
    tables = unit_tables(db)
    assert len(tables) == len(UNIT_LAYERS)
    try:
        with db.cursor() as cur:
            cur.execute(f"SELECT fid, {units} FROM {table} WHERE fid = ANY(%s)", (fids,))
            before = sorted(cur.fetchall())
            for i, name in enumerate(tables):
                cur.execute(f"ALTER TABLE {name} RENAME TO ioc_test_away_{i}")
            cur.execute(
                "UPDATE data.reports_1022 SET status = 'đã đóng' WHERE fid = ANY(%s)", (fids,)
            )
            cur.execute(f"SELECT fid, {units} FROM {table} WHERE fid = ANY(%s)", (fids,))
            assert sorted(cur.fetchall()) == before
            cur.execute("SAVEPOINT move")
            with pytest.raises(psycopg2.errors.UndefinedTable):
                cur.execute(
                    "UPDATE data.reports_1022 SET geom = ST_Translate(geom, 0.01, 0)"
                    " WHERE fid = %s",
                    (fids[0],),
                )
            cur.execute("ROLLBACK TO SAVEPOINT move")
            for i, name in enumerate(tables):
                cur.execute(f"ALTER TABLE data.ioc_test_away_{i} RENAME TO {name.split('.', 1)[1]}")
            assert differences(db, table) == (0, 0)
    finally:
        db.rollback()


def test_a_request_during_a_build_reads_the_layer(client, db, operator, table):
    with db.cursor() as cur:
        cur.execute(f"DROP TABLE {table}")
    db.commit()
    panels.CACHE.answers.clear()
    params = {"from": "2025-03-01", "to": "2025-12-01"}
    try:
        with db.cursor() as cur:
            cur.execute(HOLD, (BOARD.layer,))  # a build is running
        doc = data(client, operator, **params)
    finally:
        db.rollback()
    start, end = (datetime.fromisoformat(params[k]).replace(tzinfo=CITY) for k in ("from", "to"))
    where = "r.reported_at >= %s AND r.reported_at < %s"
    assert doc["kpi"]["total"] == sql_rows(db, where, [start, end], "count(*)")[0][0]
    assert doc["kpi"]["total"] > 0
    # The copy was not built by the request; the next request, with no build running, builds it.
    with db.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (table,))
        assert cur.fetchone()[0] is None
    db.rollback()
    panels.CACHE.answers.clear()
    assert data(client, operator, **params)["kpi"] == doc["kpi"]
    assert differences(db, table) == (0, 0)
    db.rollback()


def test_the_server_builds_the_rows_when_it_starts(db, settings):
    """With no copy, a server that starts builds it without any dashboard request."""
    from api.app import create_app
    from ioc.dashboards import rows

    args = (BOARD.layer, rows.columns(BOARD), UNIT_LAYERS, rows.coded(BOARD))

    def current() -> str | None:
        with db.cursor() as cur:
            cur.execute("SELECT ioc.dashboard_rows_current(%s, %s, %s, %s)", args)
            (name,) = cur.fetchone()
        db.rollback()
        return name

    with db.cursor() as cur:
        cur.execute("DELETE FROM ioc.dashboard_rows WHERE layer_id = %s", (BOARD.layer,))
    db.commit()
    assert current() is None
    with TestClient(create_app(settings)):
        name = wait_until(current, message="the start-up build of the dashboard's rows")
    assert differences(db, f'ioc."{name}"') == (0, 0)
    db.rollback()
