"""The dashboard bench's check (bench/dashcheck.py) on the demo city: its direct SQL equals every
panel of the HTTP answer, and a panel that differs is named with its key."""

from __future__ import annotations

import asyncio
import copy

import asyncpg
import pytest

from bench import dashcheck
from tests.http.test_dashboards import BOARD
from tests.http.test_dashboards import data as answer


@pytest.fixture(scope="module")
def operator(make_key):
    return {"Authorization": f"Bearer {make_key('operator')}"}


def expected(db_settings, doc):
    async def run():
        conn = await asyncpg.connect(db_settings.dsn())
        try:
            return await dashcheck.expected(conn, BOARD, doc)
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.mark.parametrize(
    "params",
    [
        {},  # the default range (the answer's filter has no 'to')
        {"from": "2025-01-01", "to": "2025-12-01", "units": "ward"},
        {"from": "2025-06-01", "to": "2025-09-01", "category": "rác thải", "units": "ward2019"},
        {"from": "2025-01-01", "to": "2025-12-01", "ward": "25747", "units": "district"},
        {"from": "2025-03-01", "to": "2025-12-01", "district": "776", "status": "mới"},
        {
            "from": "2025-11-01",
            "to": "2025-11-30T12:00",
            "channel": "điện thoại",
            "handling_unit": "UBND Xã Bình Hưng",
            "bucket": "hour",
            "units": "ward2019",
        },
    ],
)
def test_direct_sql_equals_every_panel(client, db_settings, operator, params):
    doc = answer(client, operator, **params)
    want = expected(db_settings, doc)
    assert want["kpi"]["total"] > 0 and want["series"] and want["ranking"]
    assert dashcheck.first_difference(dashcheck.observed(doc), want) is None


def test_a_differing_panel_is_named_with_its_key(client, db_settings, operator):
    doc = answer(client, operator, **{"from": "2025-01-01", "to": "2025-12-01", "units": "ward"})
    want = expected(db_settings, doc)
    wrong = copy.deepcopy(doc)
    wrong["units"][0]["overdue"] += 1
    code = wrong["units"][0]["code"]
    assert dashcheck.first_difference(dashcheck.observed(wrong), want).startswith(f"units {code}:")
    wrong = copy.deepcopy(doc)
    wrong["kpi"]["today"] += 1
    assert dashcheck.first_difference(dashcheck.observed(wrong), want).startswith("kpi today:")
