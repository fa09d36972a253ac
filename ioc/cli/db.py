"""``ioc db``: the project-managed PostGIS (start, stop, status), migrations, the database URL."""

from __future__ import annotations

import typer

from ioc.cli import privileges
from ioc.cli.console import friendly, out
from ioc.config import get_settings
from ioc.db import cluster as pgcluster
from ioc.db import migrations
from ioc.db.connection import connection
from ioc.errors import IocError

app = typer.Typer(
    help="The database: the project-managed PostGIS or DATABASE_URL.", no_args_is_help=True
)


def _require_managed() -> None:
    if not get_settings().database.managed:
        raise IocError("DATABASE_URL is set: ioc does not manage that database's server.")


@app.command("start")
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


@app.command("stop")
@friendly
def db_stop() -> None:
    """Stop the project-managed cluster (data is kept)."""
    _require_managed()
    stopped = pgcluster.stop_cluster(get_settings().database)
    out.print("PostGIS cluster stopped." if stopped else "PostGIS cluster was not running.")


@app.command("status")
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


@app.command("migrate")
@friendly
def db_migrate() -> None:
    """Apply pending migrations (each once, in a transaction)."""
    settings = get_settings().database
    if settings.managed:  # the role, its database and extensions; an old database handed over
        handed = pgcluster.ensure_database(settings)
        if handed:
            out.print(f"{handed} object(s) handed over to the database role {settings.db_role}.")
    with connection(settings) as conn:
        applied = migrations.migrate(conn)
    for migration in applied:
        out.print(f"applied {migration.path.name}")
    out.print("database is current." if not applied else f"{len(applied)} migration(s) applied.")


@app.command("url")
@friendly
def db_url() -> None:
    """Print the database URL ioc uses."""
    out.print(get_settings().database.dsn(), highlight=False, soft_wrap=True)
