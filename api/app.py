"""The FastAPI application factory; resources are owned by the lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.limits import BodyLimit
from api.metrics import Metrics, RequestMetrics, StateCollector, watching
from api.middleware import (
    HeadAsGet,
    RequestContextMiddleware,
    TileFastPath,
    WeightedGZipMiddleware,
    with_cors,
)
from api.routers import (
    addresses,
    catalog,
    collections,
    dashboards,
    events,
    grid,
    health,
    history,
    labels,
    landing,
    maps,
    metrics,
    publish_page,
    publishing,
    query,
    stats,
    tiles,
    transactions,
)
from api.state import build_state
from api.static import static_files
from ioc.config import Settings, get_settings
from ioc.dashboards import rows as board_rows
from ioc.db import migrations
from ioc.db.connection import create_pool
from ioc.db.routing import ReadRouter
from ioc.errors import MigrationError, PostGISMissing
from ioc.events.hub import EventHub
from ioc.logs import configure_logging

log = logging.getLogger("ioc.api")

DESCRIPTION = """
Máy chủ bản đồ của Trung tâm Điều hành Thông minh (IOC) TP. Hồ Chí Minh —
map server of the Intelligent Operations Centre of Ho Chi Minh City.

Layers of the city's GIS warehouse as GeoJSON and vector tiles, with access levels:
send an API key as `Authorization: Bearer KEY` or as the password of HTTP Basic (any user
name); without one you are an anonymous citizen and see public layers only.
"""


async def _check_database(pool) -> None:
    """Refuse to serve without PostGIS or with a schema that is not exactly current."""
    version = await pool.fetchval(migrations.POSTGIS_VERSION_SQL)
    if version is None:
        raise PostGISMissing("PostGIS is not installed in the database: run 'ioc db migrate'.")
    state = await migrations.state_async(pool)
    if state.ahead:
        raise MigrationError(
            f"The database is ahead of the code (migrations {state.ahead}): upgrade ioc."
        )
    if state.pending:
        raise MigrationError("The database needs migrations: run 'ioc db migrate'.")


class IocApp(FastAPI):
    """FastAPI behind a plain-ASGI front door: the request context wraps every request, HEAD
    is answered as GET without a body, CORS answers preflights and marks answers to other
    origins' pages, and anonymous requests for public tiles are answered before FastAPI's own
    middleware (error pages, telemetry, body limit, gzip) and routing, which cost as much per
    request as all of the tile path's own Python (the largest share of ioc's time on an
    uncached tile)."""

    def __init__(self, *args, cors_origins: list[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        front, headers = with_cors(TileFastPath(super().__call__, self), cors_origins or ())
        # Metrics outermost: every request is counted, the tile fast path's too (api/metrics).
        self.metrics = Metrics()
        self.metrics.registry.register(StateCollector(self))
        inner = RequestContextMiddleware(HeadAsGet(front), headers)
        self._front = RequestMetrics(inner, self.metrics)

    async def __call__(self, scope, receive, send) -> None:
        await self._front(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app (``uvicorn --factory api.app:create_app``)."""
    settings = settings or get_settings()
    configure_logging(settings.server.log_level, settings.server.log_format)

    @asynccontextmanager
    async def lifespan(app: IocApp) -> AsyncIterator[None]:
        pool = await create_pool(settings.database)
        builds: asyncio.Task[None] | None = None
        try:
            await _check_database(pool)
            # The typed state replaces Starlette's untyped one: request.app.state is an AppState.
            app.state = await build_state(settings, pool)  # type: ignore[assignment]
            # Replicas for the reads that tolerate lag (ioc.db.routing; none = the primary).
            app.state.reads = ReadRouter(pool, settings.database)
            await app.state.reads.start()
            await query.start_runner(app)  # query jobs, saved-query refreshes (ioc.query.jobs)
            # Dashboard rows built off the request path (a million reports: ~30 s).
            builds = asyncio.create_task(
                board_rows.build_all(pool, app.state.catalog, dashboards.boards().values())
            )
            # One LISTEN per process: change events for /events, and the catalog reload that
            # keeps this process's tiles and caches fresh after another process's write.
            hub = EventHub(
                pool,
                settings.database,
                settings.publish.events_retention_hours,
                settings.publish.events_client_buffer,
            )
            hub.on_change = app.state.reload_catalog
            app.state.events = hub
            await hub.start()
            # What is loaded by now (modules, settings, the catalog) lives as long as the
            # process: kept out of the collector's full passes, which otherwise walk ~175,000
            # objects, ~90 ms during which every request waits (a tile's p99). Unfrozen on the
            # way out, so an app discarded in a longer-lived process can still be collected.
            gc.collect()
            gc.freeze()
            log.info("ioc ready", extra={"layers": len(app.state.catalog)})
            async with watching(hub, app.metrics):  # event lag and ingest for /metrics
                yield
        finally:
            gc.unfreeze()
            if builds is not None:  # a build under way is cancelled (its transaction rolls back)
                builds.cancel()
                await asyncio.gather(builds, return_exceptions=True)
            if isinstance(getattr(app.state, "events", None), EventHub):
                await app.state.events.stop()
            if isinstance(getattr(app.state, "reads", None), ReadRouter):
                await app.state.reads.stop()
            await query.stop_runner(app)
            await pool.close()
            log.info("database connections closed")

    app = IocApp(
        cors_origins=settings.server.cors_origins,
        title="ioc — HCMC IOC map server",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "service", "description": "Health and readiness."},
            {"name": "catalog", "description": "The city's layer catalog."},
            {
                "name": "features",
                "description": "OGC API – Features Parts 1 (core), 2 (CRS) "
                "and 3 (CQL2 filtering) over the catalog.",
            },
            {"name": "tiles", "description": "Vector tiles (MVT), TileJSON and MapLibre styles."},
            {
                "name": "maps",
                "description": "Map pages (Folium): IOC wall, citizens' portal, "
                "layer previews, embeds.",
            },
            {
                "name": "publishing",
                "description": "Departments publish their layers: uploads "
                "(GeoJSON, Shapefile, GeoPackage, CSV, KML; VN-2000 aware), versions, restore.",
            },
            {
                "name": "addresses",
                "description": "Địa chỉ số — digital addresses: look-up, search, "
                "reverse and batch geocoding, linked features, what is here.",
            },
            {
                "name": "queries",
                "description": "Truy vấn không gian — spatial queries for "
                "analysts: predicates across layers, grouping by ward or district, aggregates; "
                "GeoJSON, CSV, GeoPackage; jobs; saved queries as derived layers.",
            },
            {
                "name": "statistics",
                "description": "Thống kê theo phường — per-ward statistics for choropleth maps.",
            },
        ],
    )
    errors.install(app)
    dashboards.boards()  # the dashboard files: a broken one stops the start
    # Level 5: most of level 9's saving for a fraction of its CPU on large GeoJSON pages.
    # (The request context and the tile fast path are IocApp's front door, outside it: tiles
    # are stored compressed.)
    app.add_middleware(WeightedGZipMiddleware, minimum_size=1024, compresslevel=5)
    app.add_middleware(BodyLimit, settings=settings)  # outside gzip: bodies limited first

    for router in (
        landing.router,
        health.router,
        catalog.router,
        history.router,  # before collections: its {featureId:path} would take …/history
        collections.router,
        grid.router,
        labels.router,
        tiles.router,
        maps.router,
        dashboards.router,
        addresses.router,
        publishing.router,
        publish_page.router,
        transactions.router,
        events.router,
        query.router,
        metrics.router,
        stats.router,
    ):
        app.include_router(router)
    # The map pages' scripts and styles (air-gapped).
    app.mount("/static", static_files(settings.maps.vendor_dir), name="static")
    return app
