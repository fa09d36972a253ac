"""The production topology on loopback, from Debian's packages: etcd, two Patroni-managed
PostGIS nodes (synchronous replication), HAProxy (database primary / replica ports checked
against Patroni's REST API, and the HTTP front of two ``ioc serve`` processes checked on
/readyz). deploy/compose.yml holds the same topology for containers, its Patroni and HAProxy
configuration rendered from the same templates (deploy/render.py); this is its test on one
machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy import render
from ioc.db import cluster
from ioc.db.connection import create_migrated
from ioc.settings import DatabaseSettings
from tests.conftest import free_port, wait_ready
from tests.polling import wait_until

VENV_BIN = Path(sys.executable).parent
PROGRAMS = {"etcd": "etcd-server", "patroni": "patroni", "haproxy": "haproxy"}
PASSWORD = "loopback-only"  # trust on 127.0.0.1 anyway; Patroni wants one set
LOOPBACK_HBA = (
    "local all all trust",
    "host all all 127.0.0.1/32 trust",
    "host replication all 127.0.0.1/32 trust",
)


def missing_programs() -> list[str]:
    """Debian packages whose programs are not on this machine."""
    return [
        pkg
        for prog, pkg in PROGRAMS.items()
        if not shutil.which(prog) and not Path(f"/usr/sbin/{prog}").exists()
    ]


def _patroni_config(base: Path, name: str, ports: dict[str, int], bindir: Path) -> str:
    data = base / name
    return render.patroni_config(
        name,
        scope="ioc-loopback",
        rest=f"127.0.0.1:{ports['rest']}",
        pg=f"127.0.0.1:{ports['pg']}",
        etcd_hosts=f"127.0.0.1:{ports['etcd']}",
        data_dir=str(data / "data"),
        bin_dir=str(bindir),
        socket_dir=str(data),
        pg_hba=LOOPBACK_HBA,
        password=PASSWORD,
        rewind=False,  # the superuser rewinds here
    )


def _haproxy_config(ports: dict[str, int], nodes: list[dict[str, int]], ioc: list[int]) -> str:
    return render.haproxy_config(
        bind="127.0.0.1",
        ports=ports,
        nodes=[
            render.Node(f"node{i + 1}", "127.0.0.1", n["pg"], n["rest"])
            for i, n in enumerate(nodes)
        ],
        ioc=[render.Web(f"ioc{i + 1}", "127.0.0.1", p) for i, p in enumerate(ioc)],
        resolvers=False,
    )


@dataclass
class Stack:
    """The started pieces and their ports."""

    base: Path
    ports: dict[str, int] = field(default_factory=dict)
    nodes: list[dict[str, int]] = field(default_factory=list)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    ioc_ports: list[int] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    def ioc_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ioc_ports[i]}"

    def database_url(self, port_name: str = "primary") -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.ports[port_name]}/ioc"

    def _spawn(self, name: str, args: list[str], user: str | None = None, **kw) -> None:
        log = (self.base / f"{name}.log").open("ab")
        command = ["runuser", "-u", user, "--", *args] if user else args
        self.procs[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )

    def start(self) -> None:
        self.ports = {k: free_port() for k in ("etcd", "peer", "primary", "replicas", "http")}
        self.nodes = [
            {"pg": free_port(), "rest": free_port(), "etcd": self.ports["etcd"]} for _ in range(2)
        ]
        self.ioc_ports = [free_port(), free_port()]
        user = cluster._server_user()  # noqa: SLF001 — PostgreSQL refuses root
        etcd_dir = self.base / "etcd"
        self._spawn(
            "etcd",
            [
                "etcd",
                "--name",
                "e1",
                "--data-dir",
                str(etcd_dir),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.ports['etcd']}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.ports['etcd']}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{self.ports['peer']}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{self.ports['peer']}",
                "--initial-cluster",
                f"e1=http://127.0.0.1:{self.ports['peer']}",
            ],
        )
        wait_until(
            lambda: _answers(f"http://127.0.0.1:{self.ports['etcd']}/health"),
            timeout=60,
            message="etcd to answer",
        )
        bindir = cluster.find_bindir(DatabaseSettings())
        for i, node in enumerate(self.nodes):
            name = f"node{i + 1}"
            (self.base / name).mkdir(mode=0o700)
            config = self.base / f"{name}.yml"
            config.write_text(_patroni_config(self.base, name, node, bindir))
            if user:
                shutil.chown(self.base / name, user, user)
                shutil.chown(config, user, user)
            self._spawn(name, ["patroni", str(config)], user=user)
            if i == 0:  # the first bootstraps; the second clones it
                wait_until(
                    lambda: self.role(0) == "primary",
                    timeout=120,
                    message="node1 to bootstrap as primary",
                )
        wait_until(
            lambda: self.role(1) == "replica", timeout=120, message="node2 to stream from node1"
        )
        config = self.base / "haproxy.cfg"
        config.write_text(_haproxy_config(self.ports, self.nodes, self.ioc_ports))
        self._spawn("haproxy", ["haproxy", "-f", str(config), "-db"])
        # (model_copy: DatabaseSettings(url=...) would be ignored, the field reads DATABASE_URL)
        url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.ports['primary']}/postgres"
        database = DatabaseSettings().model_copy(update={"url": url})
        # Round robin over servers not checked yet: four primaries in a row = node2 is out.
        wait_until(
            lambda: all(_connects(database) for _ in range(4)),
            timeout=30,
            message="HAProxy's primary port to reach only the primary",
        )
        create_migrated("ioc", database)
        cache = self.base / "tiles"  # the shared tile cache of both ioc processes
        cache.mkdir(mode=0o777)
        cache.chmod(0o777)
        for i in range(2):
            self.start_ioc(i)

    def start_ioc(self, i: int, **settings: str) -> None:
        """Start ioc process ``i`` (again), with ``settings`` added to its environment."""
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url("primary"),
            DATABASE_REPLICA_URLS=self.database_url("replicas"),
            IOC_TILE_CACHE_DIR=str(self.base / "tiles"),
            IOC_LOG_LEVEL="warning",
            IOC_CATALOG_CHECK_SECONDS="0.5",
            **settings,
        )
        self._spawn(
            f"ioc{i}",
            [str(VENV_BIN / "ioc"), "serve", "--port", str(self.ioc_ports[i])],
            env=env,
            cwd=Path.cwd(),
        )
        try:
            wait_ready(self.ioc_url(i), timeout=120)
        except AssertionError as exc:
            tail = (self.base / f"ioc{i}.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}\n--- ioc{i}.log ---\n{tail}") from None

    def role(self, i: int) -> str | None:
        """``primary``, ``replica`` (streaming) or None, as Patroni's REST API says."""
        rest = f"http://127.0.0.1:{self.nodes[i]['rest']}"
        for role in ("primary", "replica"):
            if _answers(f"{rest}/{role}"):
                return role
        return None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)

    def stop(self) -> None:
        for name in ("ioc0", "ioc1", "haproxy", "node2", "node1", "etcd"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _connects(settings: DatabaseSettings) -> bool:
    import psycopg2

    try:  # HAProxy's servers are up until checked: wait for the primary behind the port
        conn = psycopg2.connect(settings.dsn(), connect_timeout=2)
        with conn.cursor() as cur:
            cur.execute("SELECT NOT pg_is_in_recovery()")
            primary = cur.fetchone()[0]
        conn.close()
        return primary
    except psycopg2.OperationalError:
        return False
