"""Map pages (Folium): the views of ``ioc/maps/view_files``, layer previews, and the operators' session."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Cookie, Depends, Form, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from api.deps import SESSION_COOKIE, CatalogDep, StateDep, api_key_of, get_principal
from api.html import negotiate, render
from api.urls import BaseUrlDep, app_path, base_path, page_base
from ioc.catalog import sessions
from ioc.catalog.access import Principal
from ioc.catalog.keys import resolve_key
from ioc.errors import Forbidden, NotAuthenticated
from ioc.maps import views as maps
from ioc.maps.render import TileVersions, content_security_policy, new_nonce, render_page
from tiles.versions import current_version

router = APIRouter(prefix="/maps", tags=["maps"])

# The operators' map session: an HttpOnly cookie that holds a session token (ioc/sessions.py),
# so that a wall screen's browser (which cannot send an Authorization header) reads internal
# layers. See docs/maps.md, and api/deps.py (SESSION_COOKIE) for how GET requests accept it.
EmbedQuery = Annotated[bool, Query(description="1 = chrome-less page for an iframe")]
LangQuery = Annotated[maps.Lang | None, Query(description="Language (default: the view's)")]


async def get_maps_settings(state: StateDep) -> maps.MapsSettings:
    """The map settings of the app."""
    return state.settings.maps


MapsSettingsDep = Annotated[maps.MapsSettings, Depends(get_maps_settings)]


async def get_views(state: StateDep) -> dict[str, maps.MapView]:
    """The view files, read and validated at start-up."""
    return state.views


ViewsDep = Annotated[dict[str, maps.MapView], Depends(get_views)]


# The caller from ``Authorization``, else from the map-session cookie, else anonymous: the
# API's own dependency, the one place a caller is decided.
MapPrincipalDep = Annotated[Principal, Depends(get_principal)]


def page_headers(settings: maps.MapsSettings, cacheable: bool, nonce: str) -> dict[str, str]:
    """Security and caching headers of a map page: its CSP admits only scripts carrying this
    response's ``nonce``; ``frame-ancestors`` says who may embed it."""
    # A public page kept 60 s by a shared cache repeats its nonce to whoever gets the copy; that
    # is harmless: the nonce guards against markup injected into *this* body, which is fixed.
    return {
        "Content-Security-Policy": content_security_policy(nonce, settings.frame_ancestors),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "public, max-age=60" if cacheable else "private, no-store",
        "Vary": "Authorization, Cookie",
    }


def _view_doc(view: maps.MapView, base: str, readable: list[str]) -> dict:
    return {
        "id": view.id,
        "title": view.title.model_dump(),
        "description": view.description.model_dump(),
        "audience": view.audience,
        "layout": view.layout,
        "language": view.language,
        "layers": readable,
        "href": f"{base}/maps/{view.id}",
        "embed": f"{base}/maps/{view.id}?embed=1",
    }


@router.get("", summary="Map views the caller may open")
async def list_views(
    request: Request,
    views: ViewsDep,
    catalog: CatalogDep,
    principal: MapPrincipalDep,
    base: BaseUrlDep,
    f: str | None = None,
):
    """The views for this caller (public ones for everyone, internal ones for city users),
    each with the layers the caller would see in it."""
    visible = maps.visible_views(views, principal)
    doc = {
        "views": [
            _view_doc(
                view,
                base,
                [item.layer.id for item in maps.plan_view(view, catalog, principal).layers],
            )
            for view in visible
        ],
        "numberOfViews": len(visible),
    }
    if negotiate(request, f) == "html":
        return render(request, "maps/index.html", {"doc": doc, "principal": principal})
    return doc


def _safe_next(request: Request, target: str | None) -> str:
    """Only a map page of this server may follow a login (no open redirect): a root-relative
    path under the public base's path (``/ioc/maps/…`` behind a prefix)."""
    maps_path = f"{base_path(request)}/maps"
    if not target:
        return f"{maps_path}/wall"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(maps_path) or "\\" in target:
        return f"{maps_path}/wall"
    return target


def _login_page(request: Request, target: str, status_code: int = 200, error: str | None = None):
    return render(
        request,
        "maps/session.html",
        {"next": _safe_next(request, target), "error": error},
        status_code=status_code,
    )


@router.get("/session", summary="Sign in to the map pages (operators)", response_class=HTMLResponse)
async def session_form(request: Request, next: str | None = None):  # noqa: A002
    """A form that trades an API key for the map-session cookie."""
    return _login_page(request, next or "")


def _public_origin(request: Request) -> str | None:
    """scheme://host[:port] of IOC_PUBLIC_URL, when set (ioc behind a proxy)."""
    public = urlsplit(request.app.state.settings.server.public_url or "")
    return f"{public.scheme}://{public.netloc}" if public.scheme and public.netloc else None


def _secure(request: Request) -> bool:
    """Whether the session cookie is ``Secure``: over HTTPS, and whenever IOC_PUBLIC_URL is
    https, whatever the proxy forwards (a TLS proxy that says nothing would otherwise get a
    cookie that browsers also send over plain HTTP)."""
    return request.url.scheme == "https" or (_public_origin(request) or "").startswith("https:")


@router.post(
    "/session",
    summary="Trade an API key for an HttpOnly map-session cookie",
    responses={
        303: {"description": "Signed in from the form: on to the page it came from"},
        401: {
            "description": "Unknown or revoked key (the form gets its page again)",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
                "text/html": {},
            },
        },
    },
)
async def open_session(
    request: Request,
    settings: MapsSettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    key: Annotated[str | None, Form(description="API key (form posts)")] = None,
    next: Annotated[str | None, Form()] = None,  # noqa: A002
):
    """Sets ``ioc_session`` (HttpOnly, SameSite=Strict, Secure over HTTPS or when
    IOC_PUBLIC_URL is https) to a new session token of the key, valid IOC_MAPS_SESSION_HOURS.

    Send the key as ``Authorization: Bearer KEY`` (or HTTP Basic, the key as the password;
    JSON answer) or as the ``key`` field of the sign-in form (redirect to ``next``). The key
    never appears in a URL nor in the cookie.
    """
    origin = request.headers.get("origin")
    if origin and origin not in (
        f"{request.url.scheme}://{request.url.netloc}",
        _public_origin(request),
    ):
        raise Forbidden("Map sessions are opened from this server's own pages only.")
    from_form = key is not None
    secret = api_key_of(authorization) if authorization else (key or "").strip()
    pool = request.app.state.pool
    principal = await resolve_key(pool, secret) if secret else None
    if principal is None or principal.key_id is None:
        if from_form:
            return _login_page(request, next or "", 401, "invalid")
        raise NotAuthenticated("The API key is unknown or revoked.")
    max_age = settings.session_hours * 3600
    response: Response
    if from_form:
        response = RedirectResponse(_safe_next(request, next), status_code=303)
    else:
        response = JSONResponse(
            {"role": principal.role, "department": principal.department, "expires_in": max_age}
        )
    token = await sessions.open_session(pool, principal.key_id, settings.session_hours)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response


@router.delete("/session", summary="Close the map session", status_code=204)
async def close_session(
    request: Request,
    session: Annotated[str | None, Cookie(alias=SESSION_COOKIE, include_in_schema=False)] = None,
) -> Response:
    """Ends the session on the server and deletes the cookie (the key itself stays valid:
    revoke it with `ioc keys revoke`, which ends all its sessions)."""
    if session:
        await sessions.close_session(request.app.state.pool, session)
        request.app.state.sessions.forget(session)
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request)
    )
    return response


def tile_versions(request: Request) -> TileVersions:
    """The pages' tile URLs carry this process's tile versions (docs/scaling.md)."""
    tiles = request.app.state.tiles
    return lambda layers: current_version(tiles, layers)


async def _page(
    plan: maps.ViewPlan,
    settings: maps.MapsSettings,
    *,
    lang: maps.Lang | None,
    embed: bool,
    base: str,
    page_path: str,
    cacheable: bool,
    versions: TileVersions = None,
) -> HTMLResponse:
    nonce = new_nonce()
    html = await run_in_threadpool(
        render_page,
        plan,
        lang=lang,
        embed=embed,
        base_url=base,
        page_path=page_path,
        nonce=nonce,
        tile_versions=versions,
    )
    return HTMLResponse(html, headers=page_headers(settings, cacheable, nonce))


@router.get(
    "/preview/{layer_id}",
    summary="Preview of one layer with its legend and popups",
    response_class=HTMLResponse,
)
async def preview_layer(
    request: Request,
    layer_id: str,
    catalog: CatalogDep,
    principal: MapPrincipalDep,
    settings: MapsSettingsDep,
    lang: LangQuery = None,
    embed: EmbedQuery = False,
):
    """Any layer the caller may read (404 otherwise), over ioc's own basemap."""
    layer = catalog.get(layer_id, principal)
    plan = maps.plan_view(maps.preview_view(layer), catalog, principal)
    return await _page(
        plan,
        settings,
        lang=lang,
        embed=embed,
        base=page_base(request),
        page_path=f"/maps/preview/{layer.id}",
        cacheable=not principal.authenticated,
        versions=tile_versions(request),
    )


@router.get("/{view_id}", summary="A map view", response_class=HTMLResponse)
async def view_page(
    request: Request,
    view_id: str,
    views: ViewsDep,
    catalog: CatalogDep,
    principal: MapPrincipalDep,
    settings: MapsSettingsDep,
    lang: LangQuery = None,
    embed: EmbedQuery = False,
):
    """The view as this caller may see it: layers it may not read are left out."""
    view = views.get(view_id)
    if view is None:
        raise maps.ViewNotFound(f"There is no map view '{view_id}'.", parameter="view")
    if not maps.can_open(principal, view):
        if "text/html" in request.headers.get("accept", ""):
            # Browsers go to the sign-in form, which comes back here.
            query = f"?{request.url.query}" if request.url.query else ""
            here = _safe_next(request, base_path(request) + app_path(request) + query)
            target = quote(here, safe="")
            return RedirectResponse(f"{page_base(request)}/maps/session?next={target}", 303)
        raise NotAuthenticated(
            f"The map view '{view_id}' is for city users: send an API key "
            "or open a map session (POST /maps/session)."
        )
    plan = maps.plan_view(view, catalog, principal)
    return await _page(
        plan,
        settings,
        lang=lang,
        embed=embed,
        base=page_base(request),
        page_path=f"/maps/{view.id}",
        cacheable=view.audience == "public" and not principal.authenticated,
        versions=tile_versions(request),
    )
