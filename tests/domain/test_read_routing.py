"""Read routing against a real streaming replica (pg_basebackup of a primary started here):
reads go to the replica within the lag budget, to the primary beyond it or when the replica
does not answer, and a layer whose change the process has taken in is read on the replica only
once the replica has replayed that change — through the HTTP API too."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg2
import pytest
from fastapi.testclient import TestClient

from ioc.catalog import keys
from ioc.config import Settings
from ioc.db.connection import create_pool
from ioc.db.routing import LagClock, ReadRouter, replica_name
from tests.polling import wait_until
from tests.replication import StreamingPair, streaming_pair

IN_RECOVERY = "SELECT pg_is_in_recovery()"


@pytest.fixture(scope="module")
def pair() -> Iterator[StreamingPair]:
    with streaming_pair() as started:
        yield started


def write_on_primary(pair: StreamingPair) -> None:
    conn = psycopg2.connect(pair.primary_url())
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS public.routing_probe (n int)")
        cur.execute("INSERT INTO public.routing_probe VALUES (1)")
    conn.close()


def settings_of(pair: StreamingPair, **extra) -> Settings:
    database = pair.primary.model_copy(update={"replica_urls": [pair.replica_url()], **extra})
    return Settings(database=database)


def test_lag_clock_counts_from_when_the_primary_passed_the_replica():
    clock = LagClock(keep=10)
    clock.add(100.0, 10)
    clock.add(101.0, 20)
    clock.add(101.5, 20)  # the primary idle: no new sample
    assert clock.lag(20, now=130.0) == 0  # idle primary, replica current: no lag at all
    assert clock.lag(15, now=103.0) == 2.0  # behind the sample of 101.0
    assert clock.lag(5, now=103.0) == 3.0


def test_replica_names_hide_the_password():
    assert replica_name("postgresql://ioc:s3cret@db2:5432/ioc?sslmode=require") == "db2:5432/ioc"


def test_reads_follow_the_budget_and_the_replica_health(pair):
    settings = settings_of(pair, replica_lag_budget_seconds=1.0, replica_check_seconds=0.1)

    async def scenario() -> None:
        primary = await create_pool(settings.database)
        router = ReadRouter(primary, settings.database)
        await router.start()

        async def served_by_replica() -> bool:
            # As the API reads (lazily): a replica stopped between two checks is retried on
            # the primary, not an error (the raw replica pool raised here once).
            return await router.lazy().fetchval(IN_RECOVERY)

        async def until(expected: bool, what: str) -> None:
            for _ in range(300):  # a bound of 30 s, not a speed assertion
                if await served_by_replica() is expected:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"reads never went to the {what}: {router.replicas}")

        try:
            await until(True, "replica")
            assert router.replicas[0].lag <= 1.0
            # Replay paused and the primary written: the replica falls beyond the budget.
            await asyncio.to_thread(pair.pause)
            await asyncio.to_thread(write_on_primary, pair)
            await until(False, "primary while the replica lags")
            assert router.replicas[0].up and router.replicas[0].lag > 1.0
            fallbacks = router.fallbacks
            await asyncio.to_thread(pair.resume)
            await until(True, "replica once it caught up")
            assert router.fallbacks > fallbacks
            # The replica down: reads on the primary, the error kept in one sentence.
            await asyncio.to_thread(pair.stop_replica)
            await until(False, "primary while the replica is down")
            assert not router.replicas[0].up and router.replicas[0].error
            await asyncio.to_thread(pair.start_replica)
            await until(True, "replica once it answers again")
        finally:
            await router.stop()
            await primary.close()

    asyncio.run(scenario())


def test_a_layer_just_written_is_read_on_the_primary_until_the_replica_has_it(pair):
    settings = settings_of(pair, replica_lag_budget_seconds=60, replica_check_seconds=0.1)
    from api.app import create_app
    from tests.http.test_publish import SENSORS

    conn = psycopg2.connect(pair.primary_url())
    admin = {"Authorization": f"Bearer {keys.create_key(conn, 'admin', None, label='pytest')}"}
    conn.close()
    doc = {**SENSORS, "id": "rr_sensors"}
    feature = {
        "type": "Feature",
        "properties": {"sensor_id": "R-1", "depth_cm": 3},
        "geometry": {"type": "Point", "coordinates": [106.7, 10.77]},
    }
    with TestClient(create_app(settings)) as client:
        assert client.post("/layers", json=doc, headers=admin).status_code == 201
        reads = client.app.state.reads
        wait_until(pair.caught_up, message="the replica to replay the new layer")
        wait_until(lambda: reads.replicas[0].replayed >= reads.needed.get("rr_sensors", 0))
        before = reads.replica_reads
        assert client.get("/collections/rr_sensors/items").json()["features"] == []
        assert reads.replica_reads > before  # a quiet layer is read on the replica

        pair.pause()  # the replica lags, still well within the 60 s budget
        try:
            created = client.post("/collections/rr_sensors/items", json=feature, headers=admin)
            assert created.status_code == 201, created.text
            # The process has taken in the write's event: the layer's reads wait for the
            # replica to replay it, so the feature is there at once (from the primary).
            wait_until(lambda: "rr_sensors" in reads.needed)
            fallbacks = reads.fallbacks
            found = client.get("/collections/rr_sensors/items").json()["features"]
            assert [f["properties"]["sensor_id"] for f in found] == ["R-1"]
            assert reads.fallbacks > fallbacks
        finally:
            pair.resume()
        wait_until(lambda: reads.replicas[0].replayed >= reads.needed["rr_sensors"])
        before = reads.replica_reads
        found = client.get("/collections/rr_sensors/items").json()["features"]
        assert [f["properties"]["sensor_id"] for f in found] == ["R-1"]
        assert reads.replica_reads > before  # caught up: the replica again


def test_metrics_are_for_admin_and_operator_keys_and_count_what_happened(pair):
    from prometheus_client.parser import text_string_to_metric_families

    from api.app import create_app
    from api.metrics import route_family

    settings = settings_of(pair, replica_check_seconds=0.1)
    conn = psycopg2.connect(pair.primary_url())
    operator = keys.create_key(conn, "operator", None, label="pytest")
    analyst = keys.create_key(conn, "analyst", None, label="pytest")
    conn.close()
    with TestClient(create_app(settings)) as client:
        anonymous = client.get("/metrics")
        assert anonymous.status_code == 401 and "operator" in anonymous.json()["description"]
        refused = client.get("/metrics", headers={"Authorization": f"Bearer {analyst}"})
        assert refused.status_code == 403
        client.get("/collections/rr_sensors/items")
        client.get("/collections/rr_sensors/tiles/WebMercatorQuad/14/13050/7681")
        client.get("/collections/rr_sensors/tiles/WebMercatorQuad/14/13050/7681")
        client.get("/collections/rr_sensors/tiles/WebMercatorQuad/3/6/3")  # below its zooms
        wait_until(lambda: client.app.state.reads.replicas[0].up)
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {operator}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("ioc_requests_total", family="items", method="GET", status="2xx") >= 1
    assert value("ioc_requests_total", family="metrics", method="GET", status="4xx") == 2
    assert value("ioc_request_seconds_count", family="tiles") == 3
    # The first from the database or the disk cache (an earlier test rendered it), then memory.
    assert (
        value("ioc_tile_answers_total", source="database")
        + value("ioc_tile_answers_total", source="disk")
        == 1
    )
    assert value("ioc_tile_answers_total", source="memory") == 1  # then a hit
    assert value("ioc_tile_answers_total", source="none") == 1
    assert value("ioc_db_pool_connections", pool="primary", use="max") == 10
    replica = replica_name(pair.replica_url())
    assert value("ioc_replica_up", replica=replica) == 1
    assert value("ioc_replica_lag_seconds", replica=replica) < 5
    # The family label comes from a fixed set: an invented path cannot grow it.
    assert route_family("/no/such/thing") == "other"
    assert route_family("/collections/x/items/7/history") == "items"


def test_change_events_feed_the_lag_and_ingest_metrics(pair):
    from api.app import create_app

    settings = settings_of(pair)
    conn = psycopg2.connect(pair.primary_url())
    admin = {"Authorization": f"Bearer {keys.create_key(conn, 'admin', None, label='pytest')}"}
    conn.close()
    feature = {
        "type": "Feature",
        "properties": {"sensor_id": "R-2", "depth_cm": 4},
        "geometry": {"type": "Point", "coordinates": [106.71, 10.78]},
    }
    with TestClient(create_app(settings)) as client:
        created = client.post("/collections/rr_sensors/items", json=feature, headers=admin)
        assert created.status_code == 201, created.text
        metrics = client.app.metrics

        def counted() -> float:
            return metrics.registry.get_sample_value("ioc_event_lag_seconds_count") or 0

        wait_until(counted, message="the write's change event to be observed")
        ops = [
            s.labels["op"]
            for f in metrics.registry.collect()
            if f.name == "ioc_features_changed"
            for s in f.samples
            if s.name.endswith("_total") and s.value >= 1
        ]
        assert any(op.startswith("item") for op in ops), ops


def test_socket_replica_names_show_the_socket():
    assert replica_name("postgresql://postgres@/ioc?host=/tmp/r/run&port=5433") == (
        "/tmp/r/run:5433/ioc"
    )
