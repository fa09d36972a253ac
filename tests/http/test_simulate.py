"""`ioc simulate` against a real `ioc serve`: a few seconds of it change features of every live
layer (seen through the items and the change events), a bad key stops it with one sentence,
a publisher's key feeds its own department's layer and leaves the others alone, and the key it
makes for itself in `make run` lives only as long as the run."""

from __future__ import annotations

import signal
import subprocess

import httpx
import pytest

from ioc.cli.simulate import OWN_KEY_LABEL
from ioc.settings import PROJECT_ROOT
from layers.simulation import LIVE_LAYERS
from tests.conftest import VENV_BIN, server_env
from tests.polling import wait_until

START = "2031-03-03T07:00"  # a simulated morning no seeded value falls in
TIME_ATTRIBUTE = {
    "flood_sensors": "observed_at",
    "congestion_segments": "observed_at",
    "hospital_capacity": "updated_at",
}


@pytest.fixture(scope="module")
def admin(make_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('admin')}"}


def simulate(base: str, db_settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "ioc"), "simulate", "--url", base, *args],
        cwd=PROJECT_ROOT,
        env=server_env(db_settings, COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def last_event(db) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM ioc.events")
        (found,) = cur.fetchone()
    db.rollback()
    return found


def changed_ids(base: str, headers: dict[str, str], layer: str, since: int) -> list[str]:
    """The feature ids of the layer's change events after ``since`` (following `next`)."""
    url, ids = f"{base}/collections/{layer}/changes?since={since}&limit=1000", []
    while url:
        doc = httpx.get(url, headers=headers, timeout=30).json()
        for change in doc["changes"]:
            assert change["op"].startswith(("item.", "feed")), change
            ids += change["ids"] or []
        url = next((lk["href"] for lk in doc["links"] if lk["rel"] == "next"), None)
    return ids


def test_a_few_seconds_change_every_live_layer(live_server, db_settings, db, admin):
    since = last_event(db)
    key = admin["Authorization"].removeprefix("Bearer ")
    done = simulate(
        live_server, db_settings, "--key", key, "--speed", "60", "--duration", "12",
        "--seed", "7", "--start", START,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for layer in LIVE_LAYERS:
        ids = changed_ids(live_server, admin, layer, since)
        assert ids, f"no change event of {layer}: {done.stdout}{done.stderr}"
        feature = httpx.get(
            f"{live_server}/collections/{layer}/items/{ids[-1]}", headers=admin, timeout=30
        ).json()
        props = feature["properties"]
        if layer == "reports_1022":  # handled by its ward unit, or new
            assert props["status"] in ("đang xử lý", "đã đóng") or props["report_no"].startswith(
                "SIM-"
            ), props
        else:  # written by the simulator: its clock, in HCMC time
            assert props[TIME_ATTRIBUTE[layer]] >= "2031-03-03T00:00", props
    assert "flood_sensors" in done.stdout  # the summary table names what it fed


def test_a_refused_key_stops_with_one_sentence(live_server, db_settings):
    done = simulate(live_server, db_settings, "--key", "ioc_not-a-key", "--duration", "5")
    assert done.returncode == 1
    assert "refused the key" in done.stderr and "Traceback" not in done.stderr, done.stderr
    missing = simulate(live_server, db_settings, "--duration", "5")
    assert missing.returncode == 1 and "--key" in missing.stderr, missing.stderr


def test_a_publisher_feeds_only_its_departments_layer(live_server, db_settings, db, make_key):
    since = last_event(db)
    key = make_key("publisher", "health")
    done = simulate(
        live_server, db_settings, "--key", key, "--speed", "60", "--duration", "8",
        "--start", START,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "may not write" in done.stderr  # said once per layer left alone
    with db.cursor() as cur:
        cur.execute("SELECT DISTINCT layer_id FROM ioc.events WHERE id > %s", (since,))
        written = {row[0] for row in cur.fetchall()}
    db.rollback()
    assert "hospital_capacity" in written
    assert not written & {"flood_sensors", "congestion_segments", "reports_1022"}


def test_own_key_is_created_for_the_run_and_revoked_on_sigterm(live_server, db_settings, db):
    since = last_event(db)
    proc = subprocess.Popen(
        [str(VENV_BIN / "ioc"), "simulate", "--own-key", "--url", live_server, "--start", START],
        cwd=PROJECT_ROOT,
        env=server_env(db_settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: last_event(db) > since, timeout=120, message="a simulated write")
        assert active_own_keys(db) == 1
    finally:
        proc.send_signal(signal.SIGTERM)  # what `make run` does when the server stops
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert active_own_keys(db) == 0
    assert "updated" in out  # the summary table


def active_own_keys(db) -> int:
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM ioc.api_keys WHERE label = %s AND revoked_at IS NULL",
            (OWN_KEY_LABEL,),
        )
        (found,) = cur.fetchone()
    db.rollback()
    return found
