"""The ``ioc`` command: database, seeding, serving, catalog and keys."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ioc import privileges, publish_cli
from ioc.address_cli import app as addresses_app
from ioc.catalog import keys as keys_mod
from ioc.catalog.access import ADMIN, ROLES, Principal
from ioc.catalog.layers import load_catalog_sync
from ioc.console import err, friendly, out, progress_bar
from ioc.db import cluster as pgcluster
from ioc.db import migrations
from ioc.db.connection import connection
from ioc.errors import IocError
from ioc.maps_cli import app as maps_app
from ioc.settings import get_settings
from tiles.cli import tiles_app

app = typer.Typer(
    help="ioc — map server of the HCMC Intelligent Operations Centre.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(
    help="The database: the project-managed PostGIS or DATABASE_URL.", no_args_is_help=True
)
layers_app = typer.Typer(help="The layer catalog.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(layers_app, name="layers")
app.add_typer(keys_app, name="keys")
app.add_typer(addresses_app, name="addresses")
app.add_typer(maps_app, name="maps")
app.add_typer(tiles_app, name="tiles")
app.command("publish")(publish_cli.publish)
app.command("import")(publish_cli.import_dir)

# --- db ------------------------------------------------------------------------------------


def _require_managed() -> None:
    if not get_settings().database.managed:
        raise IocError("DATABASE_URL is set: ioc does not manage that database's server.")


@db_app.command("start")
@friendly
def db_start() -> None:
    """Initialise (first time) and start the project-managed PostGIS under var/pg."""
    _require_managed()
    settings = get_settings().database
    # As root, the user that will serve (if it exists yet) may connect over the socket.
    user = privileges.serving_user(get_settings().server.run_as, required=False)
    started = pgcluster.start_cluster(settings, socket_gid=user.gid if user else None)
    state = "started" if started else "already running"
    out.print(
        f"PostGIS cluster {state}: {settings.pg_dir / 'data'} (socket {settings.socket_dir},"
        f" port {settings.pg_port})",
        highlight=False,
    )


@db_app.command("stop")
@friendly
def db_stop() -> None:
    """Stop the project-managed cluster (data is kept)."""
    _require_managed()
    stopped = pgcluster.stop_cluster(get_settings().database)
    out.print("PostGIS cluster stopped." if stopped else "PostGIS cluster was not running.")


@db_app.command("status")
@friendly
def db_status() -> None:
    """Show whether the database runs and where it stands against the migrations."""
    settings = get_settings().database
    if settings.managed:
        status = pgcluster.cluster_status(settings)
        out.print(
            f"cluster: {'running' if status.running else 'stopped'}"
            f" (PostgreSQL {status.version or '-'}, {status.data_dir}, port {status.port})",
            highlight=False,
        )
        if not status.running:
            raise typer.Exit(3)
    with connection(settings) as conn:
        postgis = migrations.check_postgis(conn)
        state = migrations.state(conn)
    label = "current" if state.current else ("ahead of the code" if state.ahead else "pending")
    out.print(
        f"PostGIS {postgis}; schema version {state.version} ({label}"
        f"{', ' + str(len(state.pending)) + ' pending' if state.pending else ''})"
    )


@db_app.command("migrate")
@friendly
def db_migrate() -> None:
    """Apply pending migrations (each once, in a transaction)."""
    with connection(get_settings().database) as conn:
        applied = migrations.migrate(conn)
    for migration in applied:
        out.print(f"applied {migration.path.name}")
    out.print("database is current." if not applied else f"{len(applied)} migration(s) applied.")


@db_app.command("url")
@friendly
def db_url() -> None:
    """Print the database URL ioc uses."""
    out.print(get_settings().database.dsn(), highlight=False, soft_wrap=True)


# --- seed and serve ------------------------------------------------------------------------


@app.command("seed")
@friendly
def seed(
    scale: Annotated[str, typer.Option(help="demo (minutes) or city (city volumes)")] = "",
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Only when layers are empty.")
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Real city data (IOC_DATA_DIR).")] = None,
) -> None:
    """Build the demo city: sync the catalog and fill every layer, deterministically."""
    from layers.seeding import seed_database

    settings = get_settings()
    scale = scale or settings.data.seed_scale
    if scale not in ("demo", "city"):
        raise IocError(f"Unknown scale '{scale}': use demo or city.")
    data_dir = data_dir or settings.data.data_dir
    if data_dir is not None and not data_dir.is_dir():
        raise IocError(f"The data folder {data_dir} does not exist (IOC_DATA_DIR).")
    with connection(settings.database) as conn, progress_bar() as progress:
        result = seed_database(
            conn, scale=scale, data_dir=data_dir, only_if_empty=if_empty, progress=progress
        )
    if result is None:
        out.print("The database is already seeded; nothing to do.")
        return
    total = sum(result.values())
    out.print(
        f"Seeded {len(result)} layers, {total:,} features (scale {scale}"
        f"{', real data from ' + str(data_dir) if data_dir else ', no real data'}).",
        highlight=False,
    )


@app.command("serve")
@friendly
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Serve the API and map pages (checks the database first)."""
    import uvicorn

    settings = get_settings()
    with connection(settings.database) as conn:
        migrations.check_postgis(conn)
        state = migrations.state(conn)
    if state.ahead:
        raise IocError(
            f"The database is ahead of the code (migrations {state.ahead}): upgrade ioc."
        )
    if state.pending:
        raise IocError("The database needs migrations: run 'ioc db migrate'.")
    user = privileges.serving_user(settings.server.run_as)
    if user is not None:
        _serve_as(user, settings)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal under the handler that
    # was installed before it started: with this no-op one, `ioc serve` exits 0 after a clean
    # shutdown (what systemd and docker expect) instead of dying by the signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host or settings.server.host,
        port=port or settings.server.port,
        workers=workers or settings.server.workers,
        log_config=None,
        # The request-context middleware logs every request (with its id): uvicorn's own
        # access log would repeat it, and format its arguments on every request even when off.
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


def _serve_as(user: privileges.ServingUser, settings) -> None:
    """Started as root: hand over what the server writes, then become ``user`` for good."""
    from ioc.query.model import QuerySettings
    from tiles.settings import TileSettings

    privileges.check_can_run(user)
    privileges.hand_over(user, [TileSettings().cache_dir, QuerySettings().job_dir])
    privileges.share_env_file(user)
    if settings.database.managed:
        pgcluster.share_socket(settings.database, user.gid)
    privileges.drop(user)


# --- layers --------------------------------------------------------------------------------


@layers_app.command("list")
@friendly
def layers_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    role: Annotated[
        str, typer.Option(help=f"See the catalog as this role: {', '.join(ROLES)}.")
    ] = "admin",
    department: Annotated[str | None, typer.Option(help="Department of a publisher.")] = None,
) -> None:
    """List the layers a role may see (default: admin, i.e. all)."""
    if role not in ROLES:
        raise IocError(f"Unknown role '{role}': use one of {', '.join(ROLES)}.")
    principal = ADMIN if role == "admin" else Principal(role=role, department=department)  # type: ignore[arg-type]
    with connection(get_settings().database) as conn:
        layers = load_catalog_sync(conn).visible(principal)
    if as_json:
        doc = [
            {
                "id": la.id,
                "title": {"vi": la.title_vi, "en": la.title_en},
                "domain": la.domain,
                "department": la.department,
                "access": la.access,
                "geometry_type": la.geometry_type,
                "srid": la.srid,
                "feature_count": la.feature_count,
                "version": la.version,
                "extent": la.extent,
                "origin": la.origin,
            }
            for la in layers
        ]
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=1))
        return
    table = Table("id", "domain", "department", "access", "features", "title")
    for la in layers:
        table.add_row(
            la.id, la.domain, la.department, la.access, f"{la.feature_count:,}", la.title_vi
        )
    out.print(table)
    out.print(f"{len(layers)} layers in {len({la.domain for la in layers})} domains")


@layers_app.command("sync")
@friendly
def layers_sync() -> None:
    """Sync the manifests in layers/catalog into the registry (creates missing tables)."""
    from layers import registry
    from layers.manifest import load_catalog

    manifests = load_catalog()
    with connection(get_settings().database) as conn:
        count = registry.sync_manifests(conn, manifests)
    out.print(f"{count} layer manifests synced.")


@layers_app.command("add-table")
@friendly
def layers_add_table(
    table: Annotated[str, typer.Argument(help="SCHEMA.TABLE of an existing PostGIS table.")],
    layer_id: Annotated[str, typer.Option("--id", help="Layer id to serve it as.")],
    access: Annotated[str, typer.Option(help="public, internal or restricted.")] = "internal",
    department: Annotated[str, typer.Option(help="Owning department code.")] = "science_tech",
    domain: Annotated[str, typer.Option(help="Catalog domain.")] = "registered",
    title: Annotated[str | None, typer.Option(help="Title shown in the catalog.")] = None,
) -> None:
    """Register an existing table as a layer."""
    from layers import registry

    schema, _, name = table.rpartition(".")
    if not schema or not name:
        raise IocError("Give the table as SCHEMA.TABLE, e.g. public.flood_sensors.")
    with connection(get_settings().database) as conn:
        registry.add_table(
            conn,
            schema,
            name,
            layer_id=layer_id,
            access=access,
            department=department,
            domain=domain,
            title=title,
        )
    out.print(f"Registered {table} as layer '{layer_id}' ({access}).", highlight=False)


# --- keys ----------------------------------------------------------------------------------


@keys_app.command("create")
@friendly
def keys_create(
    role: Annotated[str, typer.Option(help="operator, analyst, publisher or admin.")],
    department: Annotated[str | None, typer.Option(help="Department of a publisher.")] = None,
    label: Annotated[str, typer.Option(help="Who or what the key is for.")] = "",
) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    with connection(get_settings().database) as conn:
        key = keys_mod.create_key(conn, role, department, label)
    err.print(
        f"Created a {role} key{' for ' + department if department else ''}; store it now,"
        " it is not shown again:"
    )
    typer.echo(key)


@keys_app.command("list")
@friendly
def keys_list() -> None:
    """List keys (never the secrets)."""
    with connection(get_settings().database) as conn:
        rows = keys_mod.list_keys(conn)
    table = Table("id", "prefix", "role", "department", "label", "created", "revoked")
    for k in rows:
        table.add_row(
            str(k.id),
            k.prefix,
            k.role,
            k.department or "",
            k.label,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
@friendly
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="Key id from 'ioc keys list'.")],
) -> None:
    """Revoke a key."""
    with connection(get_settings().database) as conn:
        if not keys_mod.revoke_key(conn, key_id):
            raise IocError(f"There is no active key with id {key_id}.")
    out.print(f"Key {key_id} revoked.")
