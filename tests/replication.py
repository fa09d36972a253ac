"""A real PostgreSQL primary and a streaming replica on this machine, for the scaling tests.

Both are clusters of the project's PostgreSQL binaries under one temporary folder, each on its
own Unix socket (the managed cluster's way: ioc.db.cluster). The replica is a ``pg_basebackup
-R`` of the primary, so it streams its WAL; :meth:`StreamingPair.pause` stops its replay to make
it lag on purpose. As root both run as the ``postgres`` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from ioc.db import cluster, migrations
from ioc.settings import DatabaseSettings
from tests.conftest import free_port

DB_NAME = "ioc"


def _as_server_user(args: list[str]) -> None:
    user = cluster._server_user()  # noqa: SLF001 — the managed cluster's own rule
    command = ["runuser", "-u", user, "--", *args] if user else args
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")


class StreamingPair:
    """A primary (migrated, PostGIS installed) and its streaming replica."""

    def __init__(self, base: Path) -> None:
        self.primary = DatabaseSettings(
            pg_dir=base / "primary", pg_port=free_port(), db_name=DB_NAME
        )
        self.replica = DatabaseSettings(
            pg_dir=base / "replica", pg_port=free_port(), db_name=DB_NAME
        )

    def start(self) -> None:
        cluster.start_cluster(self.primary)
        with psycopg2.connect(self.primary.dsn()) as conn:
            migrations.migrate(conn)
        conn.close()
        for sub in ("run", "log"):
            (self.replica.pg_dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.replica.pg_dir, *(2 * [cluster._server_user() or "root"]))  # noqa: SLF001
        bindir = cluster.find_bindir(self.primary)
        _as_server_user(
            [
                str(bindir / "pg_basebackup"),
                "-D",
                str(self.replica.pg_dir / "data"),
                "-h",
                str(self.primary.socket_dir),
                "-p",
                str(self.primary.pg_port),
                "-U",
                "postgres",
                "-X",
                "stream",
                "-c",
                "fast",  # a spread checkpoint would take minutes
                "-R",  # standby.signal and primary_conninfo: a streaming replica
            ]
        )
        conf = self.replica.pg_dir / "data" / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as handle:  # later lines win
            handle.write(
                f"port = {self.replica.pg_port}\n"
                f"unix_socket_directories = '{self.replica.socket_dir}'\n"
                "hot_standby_feedback = on\n"
            )
        cluster.start_cluster(self.replica)

    def stop(self) -> None:
        for settings in (self.replica, self.primary):
            try:
                cluster.stop_cluster(settings)
            except Exception:  # noqa: BLE001 — best effort at teardown
                pass

    def stop_replica(self) -> None:
        cluster.stop_cluster(self.replica)

    def start_replica(self) -> None:
        cluster.start_cluster(self.replica)

    def _on_replica(self, sql: str) -> object:
        # The superuser: pausing replay is the cluster administrator's, not ioc's role's.
        conn = psycopg2.connect(self.replica.superuser_dsn())
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()[0]
        finally:
            conn.close()

    def pause(self) -> None:
        """Stop replaying WAL on the replica (it keeps receiving): it falls behind."""
        self._on_replica("SELECT pg_wal_replay_pause()::text")

    def resume(self) -> None:
        self._on_replica("SELECT pg_wal_replay_resume()::text")

    def caught_up(self) -> bool:
        """True when the replica has replayed everything the primary has written."""
        conn = psycopg2.connect(self.primary.dsn())
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_current_wal_lsn()::text")
                position = cur.fetchone()[0]
        finally:
            conn.close()
        return bool(self._on_replica(f"SELECT pg_last_wal_replay_lsn() >= '{position}'::pg_lsn"))

    def primary_url(self) -> str:
        return self.primary.dsn()

    def replica_url(self) -> str:
        return self.replica.dsn()


@contextmanager
def streaming_pair() -> Iterator[StreamingPair]:
    """A started primary + replica, stopped and removed on exit."""
    base = Path(tempfile.mkdtemp(prefix="ioc-replication-"))
    base.chmod(0o755)  # the postgres user must reach it
    pair = StreamingPair(base)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(base, ignore_errors=True)
