"""Typed request dependencies: the pool, the catalog, the caller, a readable layer."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request

from ioc.access import ANONYMOUS, Principal
from ioc.catalog import Catalog, Layer
from ioc.errors import NotAuthenticated
from ioc.keys import resolve_key
from ioc.settings import Settings


def get_pool(request: Request):
    """The asyncpg pool owned by the app's lifespan."""
    return request.app.state.pool


def get_catalog(request: Request) -> Catalog:
    """The layer catalog loaded at start-up."""
    return request.app.state.catalog


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_principal(
    request: Request,
    authorization: Annotated[str | None, Header(description="`Bearer <API key>`")] = None,
) -> Principal:
    """Anonymous without a key; the key's principal with one; 401 for an unknown key."""
    if not authorization:
        return ANONYMOUS
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise NotAuthenticated("Send the API key as 'Authorization: Bearer KEY'.")
    principal = await resolve_key(request.app.state.pool, key.strip())
    if principal is None:
        raise NotAuthenticated("The API key is unknown or revoked.")
    return principal


PoolDep = Annotated[object, Depends(get_pool)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_layer(
    catalog: CatalogDep,
    principal: PrincipalDep,
    collection_id: Annotated[str, Path(alias="collectionId", description="Layer id")],
) -> Layer:
    """The layer named in the path, or 404 when unknown or not readable."""
    return catalog.get(collection_id, principal)


LayerDep = Annotated[Layer, Depends(get_layer)]
