"""A streaming replica killed between two health checks (issue 24): the reads routed to it in
that interval are retried once on the primary — items, one feature, tiles all answer 200, none
503 — and the replica is out of the rotation until a check finds it answering again."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from fastapi.testclient import TestClient

from ioc.catalog import keys
from ioc.config import Settings
from ioc.db.connection import create_pool
from ioc.db.routing import ReadRouter
from tests.http.test_tiles import decode, tile_of
from tests.polling import wait_until
from tests.replication import StreamingPair, streaming_pair

LAYER = "fault_sensors"
POINT = (106.7, 10.77)


def tile_of_point(z: int) -> tuple[int, int, int]:
    return tile_of(*POINT, z)


@pytest.fixture
def pair() -> Iterator[StreamingPair]:
    """A primary and its replica for each test: each kills the replica."""
    with streaming_pair() as started:
        yield started


def kill_server(settings) -> None:
    """SIGKILL the postmaster and every backend of a cluster at once: a machine lost, not a
    shutdown (no goodbye to the clients)."""
    postmaster = int((settings.pg_dir / "data" / "postmaster.pid").read_text().split()[0])
    family = [postmaster]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    family.append(int(proc.name))
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_pathsrouted_to_a_replica_that_died_are_answered_by_the_primary(pair: StreamingPair):
    from api.app import create_app
    from tests.http.test_publish import SENSORS

    database = pair.primary.model_copy(
        update={
            "replica_urls": [pair.replica_url()],
            "replica_lag_budget_seconds": 3600,
            "replica_check_seconds": 60,  # checked by hand below
        }
    )
    conn = psycopg2.connect(pair.primary_url())
    admin = {"Authorization": f"Bearer {keys.create_key(conn, 'admin', None, label='pytest')}"}
    conn.close()
    feature = {
        "type": "Feature",
        "properties": {"sensor_id": "F-1", "depth_cm": 7},
        "geometry": {"type": "Point", "coordinates": list(POINT)},
    }
    with TestClient(create_app(Settings(database=database))) as client:
        created = client.post("/layers", json={**SENSORS, "id": LAYER}, headers=admin)
        assert created.status_code == 201, created.text
        written = client.post(f"/collections/{LAYER}/items", json=feature, headers=admin)
        assert written.status_code == 201, written.text
        # Reads of three shapes: a page (a pooled connection), one feature (a prepared
        # statement first), tiles (statements on the pool; each tile once, then cached).
        paths = (
            f"/collections/{LAYER}/items?limit=10",
            f"/collections/{LAYER}/items/{written.json()['ids'][0]}",
        )
        tiles = [f"/tiles/{LAYER}/{z}/{x}/{y}.pbf" for z, x, y in map(tile_of_point, range(14, 20))]
        reads = client.app.state.reads
        replica = reads.replicas[0]
        reads.interval = 3600  # after the first interval (60 s), none either
        wait_until(lambda: LAYER in reads.needed, message="the write's event")
        wait_until(pair.caught_up, message="the replica to replay the write")
        # One check by hand, then none: the replica dies inside one interval between checks.
        client.portal.call(reads.check)
        assert replica.up and replica.replayed >= reads.needed[LAYER]
        before = reads.replica_reads
        assert decode(client.get(tiles[0]))[LAYER]["features"]
        for path in paths:
            assert client.get(path).status_code == 200, path
        assert reads.replica_reads > before + len(paths), "the reads did not go to the replica"

        failures: list[tuple[str, int]] = []
        stop = threading.Event()

        def load() -> None:  # a steady reader across the kill
            while not stop.is_set():
                for path in paths:
                    status = client.get(path).status_code
                    if status != 200:
                        failures.append((path, status))

        readers = [threading.Thread(target=load) for _ in range(2)]
        for reader in readers:
            reader.start()
        try:
            wait_until(lambda: reads.replica_reads > before + 10, message="reads on the replica")
            kill_server(pair.replica)
            wait_until(lambda: not replica.up, message="the replica to be marked down")
            after = reads.replica_reads
            for path in paths * 3:  # the interval's reads: the primary's
                assert client.get(path).status_code == 200, path
            for path in tiles[1:]:  # tiles not rendered yet: from the database
                assert decode(client.get(path))[LAYER]["features"], path
        finally:
            stop.set()
            for reader in readers:
                reader.join(timeout=60)
        assert failures == []
        assert reads.lost >= 1 and replica.lost >= 1
        metrics = client.app.metrics.registry
        assert metrics.get_sample_value(
            "ioc_replica_lost_reads_total", {"replica": replica.name}
        ) == float(replica.lost)
        assert "F-1" in client.get(paths[1]).text
        # Marked down until a check finds it again: no more reads sent to it meanwhile.
        assert reads.replica_reads == after
        assert replica.error


def test_a_transaction_begun_on_a_replica_that_dies_before_its_first_answer_moves(pair):
    """BEGIN answered by the replica, then the replica killed: the transaction's first
    statement fails there, so the transaction is begun again on the primary and answers; the
    pool's statements and new connections go to the primary too."""
    database = pair.primary.model_copy(
        update={"replica_urls": [pair.replica_url()], "replica_check_seconds": 60}
    )

    async def scenario() -> None:
        primary = await create_pool(database)
        router = ReadRouter(primary, database)
        await router.start()  # one check: the replica answers
        router.interval = 3600
        try:
            assert router.replicas[0].up
            async with router.lazy().acquire() as conn, conn.transaction(readonly=True):
                await asyncio.to_thread(kill_server, pair.replica)
                # The first answer of the transaction: the primary's (not in recovery).
                assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
                assert (
                    await conn.fetchval("SELECT current_setting('transaction_read_only')") == "on"
                )
            assert router.lost == 1 and not router.replicas[0].up
            assert await router.lazy().fetchval("SELECT pg_is_in_recovery()") is False
        finally:
            await router.stop()
            await primary.close()

    asyncio.run(scenario())
