"""The application's state: one typed object built by the lifespan, reached through one
dependency (``api.deps.StateDep``) or ``app.state`` in plain ASGI code."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from api.ratelimit import WriteLimiter
from ioc.catalog.keys import KeyCache
from ioc.catalog.layers import Catalog, CatalogWatcher, load_catalog, read_layers
from ioc.catalog.sessions import resolve_session
from ioc.config import Settings
from ioc.db.connection import Pool
from ioc.db.routing import ReadRouter
from ioc.maps.views import MapView, load_views
from tiles.render import TileService

Listener = Callable[[Catalog, set[str]], None]


@dataclass
class AppState:
    """Everything a request may need, built once at start-up (see ``api.app.lifespan``)."""

    settings: Settings
    pool: Pool
    catalog: Catalog
    catalog_watcher: CatalogWatcher
    tiles: TileService
    views: dict[str, MapView]
    write_limiter: WriteLimiter  # per API key, in this process (api/ratelimit.py)
    keys: KeyCache = field(default_factory=KeyCache)
    # Map-session tokens: a closed session is forgotten here at once, elsewhere within the ttl.
    sessions: KeyCache = field(default_factory=lambda: KeyCache(lookup=resolve_session))
    query_runner: Any = None
    events: Any = None  # the process's ioc.events.hub.EventHub, started by the lifespan
    # Beyond the tile service, which always hears (see notify): e.g. a test's recorder.
    catalog_listeners: list[Listener] = field(default_factory=list)
    reads: ReadRouter | None = None  # replicas for reads that tolerate lag (ioc.db.routing)
    # Tiles answered by source: memory, disk (hits), database (a miss), none (/metrics).
    tile_sources: collections.Counter[str] = field(default_factory=collections.Counter)

    def read_pool(self, layers: Iterable[str] = ()) -> Pool:
        """Where a read that tolerates the lag budget goes (docs/scaling.md): a replica within
        it that holds every change of ``layers`` this process has taken in, else the primary;
        chosen at each query (ioc.db.routing.ReadPool)."""
        return self.reads.lazy(layers) if self.reads is not None else self.pool

    async def reload_catalog(self, changed: set[str]) -> Catalog:
        """The one reload after this process changed the registry (publish, restore, delete,
        saved queries): the new catalog replaces the old and every listener hears it."""
        if self.reads is not None:  # before the events are taken in (ioc.db.routing.mark)
            await self.reads.mark(changed)
        fresh = await read_layers(self.pool, changed) if changed else None
        # Merged into the catalog as it is now (no await in between, so a concurrent reload of
        # another layer is kept); a whole reload when nothing or a new layer is named.
        catalog = self.catalog.replaced(changed, fresh) if fresh is not None else None
        if catalog is None:
            catalog = await load_catalog(self.pool)
            self.catalog_watcher.checked()  # only a whole reload has seen every layer
        self.catalog = catalog
        # The change events behind the reload first: the tile caches then key on the layers'
        # tile bases and drop only the tiles the item writes touched.
        await self.tiles.catch_up(self.pool)
        self.notify(changed)
        return self.catalog

    async def current_catalog(self) -> Catalog:
        """The catalog, reloaded (listeners notified) when another process changed the
        registry, checked at most every IOC_CATALOG_CHECK_SECONDS."""
        if self.catalog_watcher.due():
            result = await self.catalog_watcher.refresh(self.pool, self.catalog)
            if result is not None:
                catalog, changed = result
                if self.reads is not None:  # before the swap, as reload_catalog: no await
                    await self.reads.mark(changed)  # between the new catalog and its events
                self.catalog = catalog
                await self.tiles.catch_up(self.pool)
                self.notify(changed)
        return self.catalog

    def notify(self, changed: set[str]) -> None:
        """Tell the tile service (its caches) and the other listeners which layers changed.
        The service is read here, not registered once, so a replaced service still hears."""
        self.tiles.forget(self.catalog, changed)
        for listener in self.catalog_listeners:
            listener(self.catalog, changed)


async def build_state(settings: Settings, pool: Pool) -> AppState:
    """The state of a starting app: map views validated (a broken view file stops the start
    with a ConfigError naming it), the catalog loaded, the tile service ready."""
    views = load_views(settings.maps.views_dir)
    watcher = CatalogWatcher(settings.server.catalog_check_seconds)
    catalog = await load_catalog(pool)
    watcher.checked()
    tiles = TileService(settings.tiles)
    await tiles.start(pool, catalog)  # the change events' state: tile bases, change boxes
    return AppState(
        settings=settings,
        pool=pool,
        catalog=catalog,
        catalog_watcher=watcher,
        tiles=tiles,
        views=views,
        write_limiter=WriteLimiter(
            settings.publish.write_rate_per_second, settings.publish.write_burst
        ),
    )
