"""The per-key write rate: an app configured with a tiny rate answers the write past the burst
with 429, Retry-After and a sentence, writes nothing, and still serves reads and other keys;
the token bucket itself refills with its (injected) clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from api.ratelimit import WriteLimiter
from tests.http.test_publish import SENSORS, _clean
from tests.http.test_transactions import feature

LAYER = "rl_writes"
ITEMS = f"/collections/{LAYER}/items"
BURST = 3


@pytest.fixture(scope="module")
def limited(settings):
    """The app with a burst of 3 writes and a rate so low no token comes back in the test."""
    from api.app import create_app

    publish = settings.publish.model_copy(
        update={"write_rate_per_second": 0.001, "write_burst": BURST}
    )
    with TestClient(create_app(replace(settings, publish=publish))) as client:
        yield client


@pytest.fixture(scope="module")
def layer(limited, make_key, db_settings):
    _clean(db_settings, "rl")
    admin = {"Authorization": f"Bearer {make_key('admin')}"}
    made = limited.post("/layers", json={**SENSORS, "id": LAYER}, headers=admin)  # not counted
    assert made.status_code == 201, made.text
    yield LAYER
    _clean(db_settings, "rl")


def count(db) -> int:
    with db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM data.{LAYER}")
        (n,) = cur.fetchone()
    db.rollback()
    return n


def test_writes_past_the_rate_are_429_and_reads_are_not(limited, layer, make_key, db):
    key = {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}
    for n in range(BURST):
        made = limited.post(ITEMS, json=feature(f"RL-{n}"), headers=key)
        assert made.status_code == 201, made.text
    before = count(db)
    fid = made.json()["ids"][0]
    for refused in (
        limited.post(ITEMS, json=feature("RL-X"), headers=key),
        limited.patch(f"{ITEMS}/{fid}", json={"properties": {"depth_cm": 1}}, headers=key),
        limited.delete(f"{ITEMS}/{fid}", headers=key),
    ):
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["code"] == "TooManyWrites"
        assert "Retry-After" in refused.json()["description"]
    assert count(db) == before  # nothing was written
    assert limited.get(f"{ITEMS}/{fid}", headers=key).json()["properties"]["depth_cm"] == 7
    for _ in range(2 * BURST):  # reads never count
        assert limited.get(ITEMS, headers=key).status_code == 200
    other = {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}
    assert limited.post(ITEMS, json=feature("RL-O"), headers=other).status_code == 201


def test_the_openapi_document_names_the_429(limited):
    post = limited.get("/openapi.json").json()["paths"]["/collections/{collectionId}/items"]
    assert "429" in post["post"]["responses"]


def test_the_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = WriteLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [bucket.take(1), bucket.take(1)] == [0.0, 0.0]
    assert bucket.take(1) == pytest.approx(0.5)  # the next token in half a second
    assert bucket.take(2) == 0.0  # another key has its own bucket
    now[0] = 0.5
    assert bucket.take(1) == 0.0
    now[0] = 100.0  # long idle: full again, never more than the burst
    assert [bucket.take(1), bucket.take(1)] == [0.0, 0.0]
    assert bucket.take(1) > 0
    assert WriteLimiter(rate=0, burst=1).take(1) == 0.0  # 0 = no limit
