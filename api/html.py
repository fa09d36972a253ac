"""HTML rendering (Jinja2, autoescaped) and ``?f=`` / ``Accept`` negotiation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.templating import Jinja2Templates

from api.urls import page_base
from ioc.errors import InvalidParameter
from ioc.maps.elements import STATIC_PREFIX, asset_url

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
CITY_TIME = ZoneInfo("Asia/Ho_Chi_Minh")


def city_time(value: datetime | None) -> str:
    """A date-time as the city reads it (dd/mm/yyyy HH:MM, Ho Chi Minh City time); '—' for none."""
    if value is None:
        return "—"
    return value.astimezone(CITY_TIME).strftime("%d/%m/%Y %H:%M")


templates.env.filters["city_time"] = city_time

Format = Literal["json", "html"]


def negotiate(request: Request, f: str | None, allowed: tuple[str, ...] = ("json", "html")) -> str:
    """The output format: ``?f=`` wins, then the Accept header, then JSON."""
    if f:
        if f not in allowed:
            raise InvalidParameter(
                f"Unknown format '{f}': use one of {', '.join(allowed)}.", parameter="f"
            )
        return f
    accept = request.headers.get("accept", "")
    if "text/html" in accept and "html" in allowed:
        return "html"
    return allowed[0]


# Template pages without a map (conformance, queryables, the map list, the sign-in form) run
# no script at all: a policy that refuses every script means markup slipped past autoescaping
# still cannot run. Only script, plugins, <base> and form targets are restricted: the pages
# link to map pages that other origins may embed, and what they load is otherwise harmless.
PAGE_CSP = (
    "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)
# Pages with a map or a search box (SCRIPT_TEMPLATES) run ioc's own files only: no inline script, no nonce, no eval, and they fetch from their own origin.
# Their data rides in a JSON block (type application/json, never executed) escaped by tojson.
SCRIPT_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)

SCRIPT_TEMPLATES = frozenset(
    {"landing.html", "catalog.html", "collection.html", "items.html", "feature.html"}
)


def page_assets(base: str) -> dict[str, str]:
    """URLs of the files the template pages load: Leaflet and ioc's own script and style."""
    web = f"{base}{STATIC_PREFIX}/web"
    return {
        "leaflet_js": asset_url("leaflet_js", base),
        "leaflet_css": asset_url("leaflet_css", base),
        "web_js": f"{web}/ioc-web.js",
        "web_css": f"{web}/ioc-web.css",
    }


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    status_code: int = 200,
):
    """A template response with the request, the links' base (``base``, see
    api.urls.page_base) and the assets' URLs in its context, and the policy of its kind:
    ioc's own script for the SCRIPT_TEMPLATES, none for the others."""
    scripts = template in SCRIPT_TEMPLATES
    base = page_base(request)
    context = {"base": base, "assets": page_assets(base), "scripts": scripts, **context}
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["Content-Security-Policy"] = SCRIPT_PAGE_CSP if scripts else PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
