"""`ioc serve` started as root serves as the unprivileged IOC_RUN_AS user (issue 16): the
process listening on the port has that user's uid, answers, writes its tile cache, reaches the
managed cluster, and cannot read root-only files nor the cluster's data."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ioc.settings import PROJECT_ROOT, DatabaseSettings, ServerSettings
from tests.conftest import VENV_BIN, free_port, server_env, wait_ready

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="serving as another user needs root")

RUN_AS = ServerSettings().run_as
TILE = "/tiles/wards/10/815/481.pbf"  # central Ho Chi Minh City


def listening_pid(port: int) -> int:
    """The process holding the listening TCP socket on ``port`` (from /proc, no tools)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # gone meanwhile
            continue
    raise AssertionError(f"nothing listens on port {port}")


def credentials(pid: int) -> dict[str, list[int]]:
    """Uid (real, effective, saved, fs), Gid and Groups of a process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        line.split(":")[0]: [int(v) for v in line.split(":")[1].split()]
        for line in status
        if line.split(":")[0] in ("Uid", "Gid", "Groups")
    }


def can_read(creds: dict[str, list[int]], path: Path) -> bool:
    """Whether a process with these credentials may open ``path`` (tried for real)."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; os.listdir(sys.argv[1]) if os.path.isdir("
            "sys.argv[1]) else open(sys.argv[1], 'rb').read(1)",
            str(path),
        ],
        user=creds["Uid"][1],
        group=creds["Gid"][1],
        extra_groups=creds["Groups"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0 or "PermissionError" in probe.stderr, probe.stderr
    return probe.returncode == 0


@pytest.fixture(scope="module")
def served(db_settings: DatabaseSettings, server_tmp):
    """A real `ioc serve`, started as root, with its own tile cache and job folders."""
    home = server_tmp("unprivileged")
    cache = home / "tile-cache"
    # What a root command (`ioc tiles seed`) left in the cache: handed over at start.
    (cache / "seeded").mkdir(parents=True)
    (cache / "seeded" / "key.txt").write_text("seeded by root")
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "ioc"), "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=server_env(
            db_settings,
            IOC_LOG_LEVEL="warning",
            IOC_TILE_CACHE_DIR=str(cache),
            IOC_QUERY_JOB_DIR=str(home / "jobs"),
        ),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url, port, proc, cache
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_serves_as_the_unprivileged_user(served):
    url, port, proc, cache = served
    user = pwd.getpwnam(RUN_AS)
    pid = listening_pid(port)
    # Privileges dropped in the process itself: the listener is the process we started, so
    # SIGTERM reaches uvicorn with no root parent in between.
    assert pid == proc.pid
    creds = credentials(pid)
    assert creds["Uid"] == [user.pw_uid] * 4  # real, effective, saved, filesystem
    assert creds["Gid"] == [user.pw_gid] * 4
    assert 0 not in creds["Groups"]

    assert httpx.get(url + "/readyz").status_code == 200  # reaches the database
    tile = httpx.get(url + TILE)
    assert tile.status_code == 200 and tile.content
    written = [p for p in cache.rglob("*.mvt.gz")]
    assert written, "the tile was not written to the disk cache"
    assert {p.stat().st_uid for p in cache.rglob("*")} == {user.pw_uid}
    assert cache.stat().st_mode & 0o077 == 0  # other local users see no cached tile


def test_cannot_read_root_only_files(served, db_settings, tmp_path):
    _, port, _, _ = served
    creds = credentials(listening_pid(port))
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    assert not can_read(creds, secret)
    assert not can_read(creds, Path("/root"))
    assert not can_read(creds, Path("/etc/shadow"))
    if db_settings.managed:
        assert not can_read(creds, db_settings.pg_dir / "data" / "PG_VERSION")
    # The probe itself works: the same credentials read what the server must read.
    assert can_read(creds, PROJECT_ROOT / "ioc" / "__init__.py")


def test_missing_user_is_one_sentence(db_settings):
    result = subprocess.run(
        [str(VENV_BIN / "ioc"), "serve", "--port", str(free_port())],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(db_settings, IOC_RUN_AS="no_such_ioc_user"),
    )
    assert result.returncode == 1
    assert "no_such_ioc_user" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
