"""deploy/: the production compose file of the replicated topology and its Patroni and HAProxy
configuration, checked as far as a machine without a container engine allows — the rendered
files match deploy/templates (which the loopback cluster test runs), the compose file wires
the services, ports, health checks and shared tile cache, HAProxy accepts its configuration
(``haproxy -c``) and Patroni its own (``patroni --validate-config``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg2
import pytest
import yaml

from deploy import render
from ioc.db import cluster, migrations
from ioc.settings import DatabaseSettings
from tests.cluster.stack import _haproxy_config
from tests.conftest import free_port

COMPOSE = render.HERE / "compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved by the loader


def _program(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        pytest.skip(f"needs the Debian package of {name} (scripts/setup.sh installs it)")
    return path


def test_rendered_files_are_current():
    assert render.stale() == [], "run python -m deploy.render"


def test_compose_services_and_wiring(compose: dict):
    services = compose["services"]
    etcd = {"etcd1", "etcd2", "etcd3"}
    assert set(services) == {*etcd, "node1", "node2", "haproxy", "ioc1", "ioc2"}
    # Three etcd members, one cluster: each names itself and all three peers, keeps its own data.
    peers = "--initial-cluster=" + ",".join(f"{m}=http://{m}:2380" for m in sorted(etcd))
    for member in etcd:
        command = services[member]["command"]
        assert f"--name={member}" in command and peers in command
        assert f"--initial-advertise-peer-urls=http://{member}:2380" in command
        assert services[member]["volumes"] == [f"{member}:/etcd-data"]
        assert "endpoint" in services[member]["healthcheck"]["test"]
    # Only HAProxy is published; the database network has no way out.
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"haproxy"}
    assert services["haproxy"]["ports"] == ["${IOC_PORT:-8000}:8080"]
    assert compose["networks"]["db"]["internal"] is True
    for name in ("node1", "node2"):
        node = services[name]
        assert f"./patroni/{name}.yml:/etc/patroni/patroni.yml:ro" in node["volumes"]
        assert "8008/health" in " ".join(node["healthcheck"]["test"])
        # A majority of etcd (two members) healthy is enough for Patroni to start.
        assert etcd <= set(node["depends_on"])
        healthy = [m for m in etcd if node["depends_on"][m]["condition"] == "service_healthy"]
        assert len(healthy) >= 2
        assert all(
            "PASSWORD" not in str(v) or v.startswith("${") for v in node["environment"].values()
        )
    assert (
        "./haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
        in (services["haproxy"]["volumes"])
    )
    for name in ("ioc1", "ioc2"):
        ioc = services[name]
        env = ioc["environment"]
        assert "@haproxy:5000/" in env["DATABASE_URL"]
        assert "@haproxy:5001/" in env["DATABASE_REPLICA_URLS"]
        # One tile cache for both: a tile rendered by one is served by the other.
        assert f"tilecache:{env['IOC_TILE_CACHE_DIR']}" in ioc["volumes"]
        assert "/readyz" in " ".join(ioc["healthcheck"]["test"])
        assert ioc["user"] == "ioc" and ioc["read_only"] is True
    for path in ("patroni/Dockerfile", "patroni/post_bootstrap.sh"):
        assert (render.HERE / path).exists()
    assert (render.HERE.parent / services["ioc1"]["build"]["dockerfile"]).exists()


def test_haproxy_checks_each_backend():
    cfg = (render.HERE / "haproxy" / "haproxy.cfg").read_text()
    sections = dict(re.findall(r"^listen (\w+)\n((?:  .*\n)+)", cfg, re.M))
    assert set(sections) == {"primary", "replicas", "ioc"}
    assert "bind *:5000" in sections["primary"] and "GET /primary" in sections["primary"]
    assert "bind *:5001" in sections["replicas"] and "GET /replica" in sections["replicas"]
    assert "bind *:8080" in sections["ioc"] and "GET /readyz" in sections["ioc"]
    for db in ("primary", "replicas"):
        assert re.findall(r"server (\w+) \1:5432 check port 8008", sections[db]) == [
            "node1",
            "node2",
        ]
    assert re.findall(r"server (\w+) \1:8000 check", sections["ioc"]) == ["ioc1", "ioc2"]


def test_haproxy_accepts_both_renderings(tmp_path: Path):
    haproxy = _program("haproxy")
    loopback = tmp_path / "loopback.cfg"
    node = {"pg": 15432, "rest": 18008}
    ports = {"primary": 15000, "replicas": 15001, "http": 18080}
    loopback.write_text(_haproxy_config(ports, [node, node], [18000, 18001]))
    broken = tmp_path / "broken.cfg"  # the check can fail: a misspelt keyword
    broken.write_text(loopback.read_text().replace("option httpchk", "option httpchek", 1))
    for cfg, ok in (
        (render.HERE / "haproxy" / "haproxy.cfg", True),
        (loopback, True),
        (broken, False),
    ):
        done = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert (done.returncode == 0) is ok, done.stdout + done.stderr


@pytest.mark.parametrize("node", render.NODES)
def test_patroni_accepts_its_configuration(node: str):
    patroni = _program("patroni")
    done = subprocess.run(
        [patroni, "--validate-config", str(render.HERE / "patroni" / f"{node}.yml")],
        capture_output=True,
        text=True,
    )
    # The validator also tries to reach etcd by its compose name, which only resolves inside
    # the compose network: that one complaint is expected here, any other is a fault.
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    hosts = ",".join(f"{m}:2379" for m in render.ETCD_MEMBERS)
    unexpected = [c for c in complaints if not c.startswith(f"etcd3.hosts {hosts} didn't pass")]
    assert unexpected == []
    config = yaml.safe_load((render.HERE / "patroni" / f"{node}.yml").read_text())
    assert config["name"] == node and config["restapi"]["connect_address"] == f"{node}:8008"
    assert "password" not in str(config["postgresql"]["authentication"])
    assert config["bootstrap"]["dcs"]["synchronous_mode"] is True
    assert config["etcd3"]["hosts"] == hosts  # every etcd member, not one


def test_post_bootstrap_lets_ioc_migrate_without_superuser():
    """deploy/patroni/post_bootstrap.sh on a fresh PostgreSQL (as Patroni runs it: a superuser
    connection string as $1): then ioc's own role, not a superuser, migrates its database."""
    base = Path(tempfile.mkdtemp(prefix="ioc-post-bootstrap-"))
    base.chmod(0o755)  # the postgres user runs the cluster when we are root
    settings = DatabaseSettings().model_copy(
        update={"url": None, "pg_dir": base, "pg_port": free_port(), "db_name": "postgres"}
    )
    bindir = cluster.find_bindir(settings)
    try:
        cluster.start_cluster(settings, database=False)  # a bare server, as Patroni's
        superuser = (
            f"host={settings.socket_dir} port={settings.pg_port} user=postgres dbname=postgres"
        )
        env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "IOC_DB_PASSWORD": "pw'1"}
        env.pop("IOC_DB_NAME", None)
        env.pop("IOC_DB_USER", None)
        done = subprocess.run(
            [str(render.HERE / "patroni" / "post_bootstrap.sh"), superuser],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        admin = psycopg2.connect(superuser)
        with admin.cursor() as cur:  # a password of its own, stored as SCRAM; no superuser
            cur.execute("SELECT rolsuper, rolpassword FROM pg_authid WHERE rolname = 'ioc'")
            rolsuper, password = cur.fetchone()
        admin.close()
        assert rolsuper is False and password.startswith("SCRAM-SHA-256$")
        conn = psycopg2.connect(
            host=str(settings.socket_dir), port=settings.pg_port, user="ioc", dbname="ioc"
        )
        try:
            assert migrations.migrate(conn), "no migration ran"
        finally:
            conn.close()
    finally:
        cluster.stop_cluster(settings)
        shutil.rmtree(base, ignore_errors=True)
