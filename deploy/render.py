"""Render the Patroni and HAProxy configurations of the replicated topology from
deploy/templates: ``python -m deploy.render`` writes the files deploy/compose.yml mounts,
``--check`` only says whether they are current. The loopback cluster test
(tests/cluster/stack.py) renders its configuration from the same templates, so what runs in
the test is what ships."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2

HERE = Path(__file__).resolve().parent
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    undefined=jinja2.StrictUndefined,  # a missing value fails the render, not the server
    keep_trailing_newline=True,
    autoescape=False,  # configuration files, not pages
)

# Inside the compose network (deploy/compose.yml): service names, the images' paths.
NODES = ("node1", "node2")
# Three etcd members: Patroni's leader key survives the loss of one (a majority remains).
ETCD_MEMBERS = ("etcd1", "etcd2", "etcd3")
PATRONI_REST, PG_PORT = 8008, 5432
HAPROXY_PORTS = {"primary": 5000, "replicas": 5001, "http": 8080}
IOC_SERVICES = ("ioc1", "ioc2")
IOC_PORT = 8000
# scram-sha-256 everywhere but the container's own socket; samenet = the compose network.
PRODUCTION_HBA = (
    "local all all peer",
    "host all all 127.0.0.1/32 scram-sha-256",
    "host replication replicator 127.0.0.1/32 scram-sha-256",
    "host all all samenet scram-sha-256",
    "host replication replicator samenet scram-sha-256",
)


@dataclass(frozen=True)
class Node:
    """A database node as HAProxy sees it: its PostgreSQL port and Patroni's REST port."""

    name: str
    host: str
    pg: int
    rest: int


@dataclass(frozen=True)
class Web:
    """An ioc process behind HAProxy."""

    name: str
    host: str
    port: int


def patroni_config(
    name: str,
    *,
    rest: str,
    pg: str,
    etcd_hosts: str,
    data_dir: str,
    bin_dir: str,
    socket_dir: str,
    pg_hba: tuple[str, ...] | list[str],
    listen_host: str | None = None,
    password: str | None = None,
    post_bootstrap: str | None = None,
    shared_buffers: str = "64MB",
    scope: str = "ioc",
    rewind: bool = True,
) -> str:
    """One Patroni node's YAML. ``rest`` and ``pg`` are the addresses others reach it at
    (host:port); it listens on the same ports on ``listen_host`` (default: that host).
    Without ``password`` Patroni takes the passwords from its environment. ``rewind``: a
    pg_rewind user of its own (Patroni 3.0's validator asks for one; without it, the
    superuser rewinds)."""
    rest_host, rest_port = rest.rsplit(":", 1)
    pg_host, pg_port = pg.rsplit(":", 1)
    return _ENV.get_template("patroni.yml.j2").render(
        scope=scope,
        name=name,
        rest_listen=f"{listen_host or rest_host}:{rest_port}",
        rest_connect=rest,
        etcd_hosts=etcd_hosts,
        pg_listen=f"{listen_host or pg_host}:{pg_port}",
        pg_connect=pg,
        data_dir=data_dir,
        bin_dir=bin_dir,
        pgpass=f"{socket_dir}/pgpass",
        socket_dir=socket_dir,
        pg_hba=list(pg_hba),
        password=password,
        post_bootstrap=post_bootstrap,
        shared_buffers=shared_buffers,
        rewind=rewind,
    )


def haproxy_config(
    *, bind: str, ports: dict[str, int], nodes: list[Node], ioc: list[Web], resolvers: bool
) -> str:
    """HAProxy's configuration: the primary and replica ports (checked on Patroni's REST
    API) and the HTTP front of the ioc processes (checked on /readyz). ``resolvers``: look
    server names up in Docker's DNS at run time."""
    return _ENV.get_template("haproxy.cfg.j2").render(
        bind=bind, ports=ports, nodes=nodes, ioc=ioc, resolvers=resolvers
    )


def production() -> dict[Path, str]:
    """The files deploy/compose.yml mounts, by path."""
    files = {
        HERE / "patroni" / f"{name}.yml": patroni_config(
            name,
            rest=f"{name}:{PATRONI_REST}",
            pg=f"{name}:{PG_PORT}",
            listen_host="0.0.0.0",
            etcd_hosts=",".join(f"{member}:2379" for member in ETCD_MEMBERS),
            data_dir="/var/lib/postgresql/data/pgdata",
            bin_dir="/usr/lib/postgresql/15/bin",
            socket_dir="/var/run/postgresql",
            pg_hba=PRODUCTION_HBA,
            post_bootstrap="/etc/patroni/post_bootstrap.sh",
            shared_buffers="1GB",
        )
        for name in NODES
    }
    files[HERE / "haproxy" / "haproxy.cfg"] = haproxy_config(
        bind="*",
        ports=HAPROXY_PORTS,
        nodes=[Node(name, name, PG_PORT, PATRONI_REST) for name in NODES],
        ioc=[Web(name, name, IOC_PORT) for name in IOC_SERVICES],
        resolvers=True,
    )
    return files


def stale() -> list[Path]:
    """Rendered files that differ from what the templates give now."""
    return [p for p, text in production().items() if not p.exists() or p.read_text() != text]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        late = stale()
        for path in late:
            print(f"{path.relative_to(HERE.parent)} is not current: run python -m deploy.render")
        return 1 if late else 0
    for path, text in production().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
