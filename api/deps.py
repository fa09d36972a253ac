"""Typed request dependencies: the pool, the catalog, the caller, a readable layer."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Cookie, Depends, Header, Path, Request

from api.ratelimit import check_write_rate
from api.state import AppState
from ioc.addresses.registry import AddressSettings
from ioc.catalog.access import ANONYMOUS, Principal
from ioc.catalog.layers import Catalog, Layer
from ioc.config import Settings
from ioc.db.connection import Pool
from ioc.errors import NotAuthenticated

# Dependencies are coroutines on purpose: FastAPI runs plain functions in a thread pool,
# which costs more than these attribute look-ups.


async def get_state(request: Request) -> AppState:
    """The app's state, built by the lifespan: the one way into it."""
    return request.app.state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_pool(state: StateDep) -> Pool:
    """The asyncpg pool owned by the app's lifespan."""
    return state.pool


async def get_read_pool(state: StateDep) -> Pool:
    """The pool of a read that tolerates the replicas' lag budget (docs/scaling.md lists the
    routes): a replica within it, else the primary."""
    return state.read_pool()


async def get_catalog(state: StateDep) -> Catalog:
    """The fresh layer catalog (see AppState.current_catalog)."""
    return await state.current_catalog()


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


async def get_address_settings(state: StateDep) -> AddressSettings:
    """The address settings of the app."""
    return state.settings.addresses


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
    state: AppState = request.app.state
    if not authorization:
        if session and request.method in ("GET", "HEAD"):
            return await state.sessions.resolve(state.pool, session) or ANONYMOUS
        return ANONYMOUS
    principal = await state.keys.resolve(state.pool, api_key_of(authorization))
    if principal is None:
        raise NotAuthenticated("The API key is unknown or revoked.")
    return principal


PoolDep = Annotated[Pool, Depends(get_pool)]
ReadPoolDep = Annotated[Pool, Depends(get_read_pool)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
AddressSettingsDep = Annotated[AddressSettings, Depends(get_address_settings)]


async def limit_writes(state: StateDep, principal: PrincipalDep) -> Principal:
    """The caller of a write; 429 past its key's write rate (reads never count)."""
    check_write_rate(state.write_limiter, principal)
    return principal


# On a router or route (``dependencies=[WriteLimit]``): every write it serves is counted.
WriteLimit = Depends(limit_writes)


async def get_layer(
    catalog: CatalogDep,
    principal: PrincipalDep,
    collection_id: Annotated[str, Path(alias="collectionId", description="Layer id")],
) -> Layer:
    """The layer named in the path, or 404 when unknown or not readable."""
    return catalog.get(collection_id, principal)


LayerDep = Annotated[Layer, Depends(get_layer)]
