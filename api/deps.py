"""Typed request dependencies: the pool, the catalog, the caller, a readable layer."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Cookie, Depends, Header, Path, Request

from ioc.addresses.registry import AddressSettings
from ioc.catalog.access import ANONYMOUS, Principal
from ioc.catalog.keys import KeyCache
from ioc.catalog.layers import Catalog, Layer
from ioc.catalog.sessions import resolve_session
from ioc.errors import NotAuthenticated
from ioc.settings import Settings
from tiles.render import TileService
from tiles.settings import TileSettings

# Dependencies are coroutines on purpose: FastAPI runs plain functions in a thread pool,
# which costs more than these attribute look-ups.


async def get_pool(request: Request):
    """The asyncpg pool owned by the app's lifespan."""
    return request.app.state.pool


async def current_catalog(state) -> Catalog:
    """The app's layer catalog: loaded at start-up, reloaded when another process changed the
    registry (checked at most every IOC_CATALOG_CHECK_SECONDS); listeners (the tile cache)
    hear which layers changed. Takes the app's state, so plain ASGI code can use it too."""
    watcher = state.catalog_watcher
    if watcher.due():
        result = await watcher.refresh(state.pool, state.catalog)
        if result is not None:
            state.catalog, changed = result
            for listener in state.catalog_listeners:
                listener(state.catalog, changed)
    return state.catalog


async def get_catalog(request: Request) -> Catalog:
    """The fresh layer catalog (see current_catalog)."""
    return await current_catalog(request.app.state)


def tile_service(state) -> TileService:
    """The process's tile service, created on first use from the app's settings; it listens
    to the catalog watcher so tiles of layers changed elsewhere are dropped from its caches."""
    service = getattr(state, "tiles", None)
    if service is None:
        settings = getattr(state.settings, "tiles", None) or TileSettings()
        service = state.tiles = TileService(settings)
        state.catalog_listeners.append(service.forget)
    return service


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_address_settings(request: Request) -> AddressSettings:
    """The address settings of the app (built once, on first use)."""
    settings = request.app.state.settings
    found = getattr(settings, "addresses", None)
    if found is None:
        found = settings.addresses = AddressSettings()
    return found


def key_cache(state) -> KeyCache:
    """The process's cache of resolved API keys."""
    cache = getattr(state, "keys", None)
    if cache is None:
        cache = state.keys = KeyCache()
    return cache


def session_cache(state) -> KeyCache:
    """The process's cache of resolved map-session tokens (a closed session is forgotten at
    once here; in other worker processes within the cache's ttl)."""
    cache = getattr(state, "sessions", None)
    if cache is None:
        cache = state.sessions = KeyCache(lookup=resolve_session)
    return cache


# The map pages' session cookie (POST /maps/session): an HttpOnly, SameSite=Strict cookie that
# holds a session token (ioc/sessions.py), never the key, so that a browser on a wall screen
# (which cannot send a header) reads internal layers. It counts on safe methods only: a forged
# cross-site request never writes.
SESSION_COOKIE = "ioc_session"
AUTH_HINT = (
    "Send the API key as 'Authorization: Bearer KEY' or as the password of HTTP Basic "
    "authentication (any user name)."
)


def api_key_of(authorization: str) -> str:
    """The API key in an ``Authorization`` header: ``Bearer KEY``, or HTTP Basic with the key
    as the password and any user name (QGIS 3.22 and many GIS clients can send only Basic).
    NotAuthenticated, with what is wrong, for anything else."""
    scheme, _, value = authorization.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme != "basic" or not value:
        raise NotAuthenticated(AUTH_HINT)
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")  # RFC 7617: UTF-8
    except (binascii.Error, UnicodeDecodeError):
        raise NotAuthenticated(
            "The Basic credentials are not base64 of 'user:KEY' in UTF-8."
        ) from None
    _, colon, key = decoded.partition(":")
    if not colon or not key.strip():
        raise NotAuthenticated(
            "The Basic credentials hold no password: send the API key as the password ('user:KEY')."
        )
    return key.strip()


async def get_principal(
    request: Request,
    authorization: Annotated[
        str | None,
        Header(description="`Bearer <API key>`, or HTTP Basic with the key as the password"),
    ] = None,
    session: Annotated[str | None, Cookie(alias=SESSION_COOKIE, include_in_schema=False)] = None,
) -> Principal:
    """Anonymous without a key; the key's principal with one; 401 for an unknown key or a
    malformed header. The one place a request's caller is decided (the map pages too).

    Without a header, the map-session cookie stands for the key on GET and HEAD (an unknown,
    expired or revoked session is anonymous, so a stale cookie never breaks public pages).
    """
    state = request.app.state
    if not authorization:
        if session and request.method in ("GET", "HEAD"):
            return await session_cache(state).resolve(state.pool, session) or ANONYMOUS
        return ANONYMOUS
    principal = await key_cache(state).resolve(state.pool, api_key_of(authorization))
    if principal is None:
        raise NotAuthenticated("The API key is unknown or revoked.")
    return principal


PoolDep = Annotated[object, Depends(get_pool)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
AddressSettingsDep = Annotated[AddressSettings, Depends(get_address_settings)]


async def get_layer(
    catalog: CatalogDep,
    principal: PrincipalDep,
    collection_id: Annotated[str, Path(alias="collectionId", description="Layer id")],
) -> Layer:
    """The layer named in the path, or 404 when unknown or not readable."""
    return catalog.get(collection_id, principal)


LayerDep = Annotated[Layer, Depends(get_layer)]
