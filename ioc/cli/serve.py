"""``ioc seed`` and ``ioc serve``: build the demo city; check the database and run uvicorn
(as an unprivileged user when started as root, see ``privileges``)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from ioc.cli import privileges
from ioc.cli.console import friendly, out, progress_bar
from ioc.config import get_settings
from ioc.db import cluster as pgcluster
from ioc.db import migrations
from ioc.db.connection import connection
from ioc.errors import IocError
from ioc.maps.views import load_views


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
            conn,
            addresses=settings.addresses,
            scale=scale,
            data_dir=data_dir,
            only_if_empty=if_empty,
            progress=progress,
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


@friendly
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Serve the API and map pages (checks the database first)."""
    import uvicorn

    settings = get_settings()
    # A broken view file stops the start here, in one sentence, not on the first map page.
    load_views(settings.maps.views_dir)
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
    privileges.check_can_run(user)
    privileges.hand_over(user, [settings.tiles.cache_dir, settings.query.job_dir])
    privileges.share_env_file(user)
    if settings.database.managed:
        pgcluster.share_socket(settings.database, user.gid)
    privileges.drop(user)
