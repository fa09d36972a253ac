"""``/publish``: the departments' publishing page (HTML; everything it does goes through the
public API: /layers, /layers/previews, /collections, /maps/session)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.deps import CatalogDep, PrincipalDep
from api.html import templates
from api.urls import page_base
from ioc.maps.render import basemap_config
from ioc.maps.views import city_basemap, readable_basemap
from layers.manifest import DOMAINS

router = APIRouter(tags=["publishing"])

# Scripts from ioc only (no inline script, no nonce needed); the preview map's styles come
# from Leaflet's stylesheet and ioc's, and Leaflet sets element styles from script (CSSOM,
# which style-src does not govern). Requests go to this server only.
PUBLISH_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)


@router.get("/publish", summary="The departments' publishing page", response_class=HTMLResponse)
async def publish_page(
    request: Request, principal: PrincipalDep, catalog: CatalogDep
) -> HTMLResponse:
    """Signed in with the map-session cookie (the page's form opens it with the department's
    key): the department's layers, uploads with a dry-run preview, versions, audit."""
    signed_in = principal.role in ("publisher", "admin")
    # The preview map's background: ioc's own basemap tiles, as the layer previews draw it.
    basemap = readable_basemap(city_basemap(), catalog, principal)
    response = templates.TemplateResponse(
        request,
        "publish/page.html",
        {
            "base": page_base(request),
            "principal": principal,
            "signed_in": signed_in,
            "domains": DOMAINS,
            "basemap": (
                {
                    **basemap_config(basemap, "light", "vi", page_base(request)),
                    "background": city_basemap().background,
                }
                if basemap
                else None
            ),
        },
    )
    response.headers["Content-Security-Policy"] = PUBLISH_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
