"""The project-managed PostgreSQL/PostGIS cluster under ``var/pg``.

initdb + pg_ctl, its own port and a Unix socket only (no TCP), no system service. When ioc runs
as root the cluster runs as the ``postgres`` system user, because PostgreSQL refuses to run as root,
and its socket is shared with the group of the user that serves ioc (``IOC_RUN_AS``): local
connections are trusted, so reaching the socket is what grants access.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from ioc.db import roles
from ioc.errors import ClusterError
from ioc.settings import DatabaseSettings

SERVER_CONFIG = """
# Written by ioc (ioc/pgcluster.py). Unix socket only; the socket directory is private.
listen_addresses = ''
port = {port}
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
max_connections = 100
shared_buffers = 256MB
work_mem = 32MB
maintenance_work_mem = 256MB
max_wal_size = 2GB
jit = off
logging_collector = off
"""


@dataclass(frozen=True)
class ClusterStatus:
    """What ``ioc db status`` shows."""

    initialised: bool
    running: bool
    data_dir: Path
    port: int
    socket_dir: Path
    version: str | None


def find_bindir(settings: DatabaseSettings) -> Path:
    """PostgreSQL server binaries: the setting, else the newest installed major version."""
    if settings.pg_bindir:
        return settings.pg_bindir
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise ClusterError(
        "PostgreSQL server binaries were not found: run 'make setup' (installs "
        "postgresql-15-postgis-3) or set IOC_PG_BINDIR."
    )


def _server_user() -> str | None:
    """The system user that runs the cluster when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ClusterError(
            "Running as root needs the 'postgres' system user to own the cluster: "
            "install the postgresql package."
        ) from exc
    return "postgres"


def _run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    user = _server_user()
    command = ["runuser", "-u", user, "--", *args] if user else args
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ClusterError(f"{Path(args[0]).name} failed: {detail[-1] if detail else 'no output'}")
    return result


def _data_dir(settings: DatabaseSettings) -> Path:
    return settings.pg_dir / "data"


def _prepare_dirs(settings: DatabaseSettings) -> None:
    for sub in ("", "run", "log"):
        (settings.pg_dir / sub).mkdir(parents=True, exist_ok=True)
    user = _server_user()
    if user:
        entry = pwd.getpwnam(user)
        for path in [settings.pg_dir, *settings.pg_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        probe = _run(["test", "-w", str(settings.pg_dir)], check=False)
        if probe.returncode != 0:
            raise ClusterError(
                f"The 'postgres' user cannot reach {settings.pg_dir}: make its parent "
                "folders traversable (chmod o+x) or set DATABASE_URL."
            )


def init_cluster(settings: DatabaseSettings) -> bool:
    """Create the cluster if it does not exist; True when it was created now."""
    data = _data_dir(settings)
    if (data / "PG_VERSION").exists():
        return False
    _prepare_dirs(settings)
    bindir = find_bindir(settings)
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=reject",
        ]
    )
    config = SERVER_CONFIG.format(port=settings.pg_port, socket_dir=settings.socket_dir)
    with open(data / "postgresql.conf", "a", encoding="utf-8") as handle:
        handle.write(config)
    return True


# Local connections are trusted (the socket is private), but not as the superuser: that one
# only for the operating-system users who administer the cluster (peer authentication), so the
# serving user, who may reach the socket, can be ioc's role and nothing more. First match wins:
# these lines go above initdb's "trust" lines.
HBA_MARK = "# ioc: the superuser for the cluster's administrators only (ioc/db/cluster.py)"
HBA_LINES = (
    HBA_MARK,
    "local all postgres peer map=ioc_admins",
    "local replication postgres peer map=ioc_admins",
)


def secure_superuser(settings: DatabaseSettings) -> bool:
    """Write the superuser's rule (HBA_LINES) and who may use it (root and ``postgres`` when
    we are root, else ourselves: the cluster's owner) unless there; True when written now."""
    data = _data_dir(settings)
    hba, ident = data / "pg_hba.conf", data / "pg_ident.conf"
    rules = hba.read_text(encoding="utf-8")
    if HBA_MARK in rules:
        return False
    admins = ("root", "postgres") if _server_user() else (pwd.getpwuid(os.geteuid()).pw_name,)
    mapped = "".join(f"ioc_admins {user} postgres\n" for user in admins)
    # Rewritten in place: the files keep their owner (the 'postgres' user when we are root).
    ident.write_text(ident.read_text(encoding="utf-8") + mapped, encoding="utf-8")
    hba.write_text("\n".join(HBA_LINES) + "\n" + rules, encoding="utf-8")
    return True


def is_running(settings: DatabaseSettings) -> bool:
    """True when the managed cluster's postmaster is up."""
    data = _data_dir(settings)
    if not (data / "PG_VERSION").exists():
        return False
    result = _run([str(find_bindir(settings) / "pg_ctl"), "-D", str(data), "status"], check=False)
    return result.returncode == 0


def start_cluster(
    settings: DatabaseSettings, socket_gid: int | None = None, *, database: bool = True
) -> bool:
    """Initialise if needed, start, and (``database``) make the database ready for ioc's
    role; True when it was started now. The group ``socket_gid`` (the serving user's) may
    connect too; otherwise only the cluster's owner (and root)."""
    init_cluster(settings)
    secured = secure_superuser(settings)
    started = False
    if secured and is_running(settings):  # a cluster made by an older ioc: take the rule now
        _run([str(find_bindir(settings) / "pg_ctl"), "-D", str(_data_dir(settings)), "reload"])
    if not is_running(settings):
        _prepare_dirs(settings)
        log = settings.pg_dir / "log" / "postgres.log"
        _run(
            [
                str(find_bindir(settings) / "pg_ctl"),
                "-D",
                str(_data_dir(settings)),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        started = True
    if database:
        ensure_database(settings)
    else:  # a bare server: wait until it answers
        _superuser(settings, "postgres", wait=30).close()
    if socket_gid is not None:
        share_socket(settings, socket_gid)
    return started


def share_socket(settings: DatabaseSettings, gid: int) -> None:
    """Let a group connect to the running cluster (as root). Done on the socket file rather
    than with PostgreSQL's unix_socket_group, which needs the 'postgres' user to be a member
    of that group, i.e. able to read what the group may read."""
    socket = settings.socket_dir / f".s.PGSQL.{settings.pg_port}"
    if socket.exists():
        os.chown(socket, -1, gid)
        socket.chmod(0o770)


def stop_cluster(settings: DatabaseSettings) -> bool:
    """Stop the cluster (fast shutdown); True when it was running."""
    if not is_running(settings):
        return False
    _run(
        [
            str(find_bindir(settings) / "pg_ctl"),
            "-D",
            str(_data_dir(settings)),
            "-m",
            "fast",
            "-w",
            "stop",
        ]
    )
    return True


def _superuser(
    settings: DatabaseSettings, database: str, wait: float = 0
) -> psycopg2.extensions.connection:
    """A superuser connection over the private socket (waits ``wait`` s for a starting server)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return psycopg2.connect(settings.superuser_dsn(database))
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"The managed cluster does not accept connections: {exc}"
                ) from exc
            time.sleep(0.3)


def ensure_database(settings: DatabaseSettings) -> int:
    """Make the ioc database ready for its role (ioc.db.roles): the role, the database it
    owns, the extensions, and objects an older ioc made as the superuser handed over. Run by
    ``ioc db start`` and ``ioc db migrate``; idempotent. Returns how many objects changed
    owner now."""
    conn = _superuser(settings, "postgres", wait=30)
    conn.autocommit = True  # CREATE DATABASE runs outside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            if cur.fetchone() == (True,):  # a standby: it has all of this from its primary
                return 0
            roles.ensure_role(cur, settings.db_role)
            roles.ensure_owned_database(cur, settings.db_name, settings.db_role)
    finally:
        conn.close()
    conn = _superuser(settings, settings.db_name)
    try:
        return roles.prepare_database(conn, settings.db_role)
    finally:
        conn.close()


def cluster_status(settings: DatabaseSettings) -> ClusterStatus:
    """Whether the managed cluster exists and runs."""
    data = _data_dir(settings)
    version_file = data / "PG_VERSION"
    return ClusterStatus(
        initialised=version_file.exists(),
        running=is_running(settings),
        data_dir=data,
        port=settings.pg_port,
        socket_dir=settings.socket_dir,
        version=version_file.read_text().strip() if version_file.exists() else None,
    )
