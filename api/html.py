"""HTML rendering (Jinja2, autoescaped) and ``?f=`` / ``Accept`` negotiation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from fastapi.templating import Jinja2Templates

from api.urls import page_base
from ioc.errors import InvalidParameter

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

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


# The template pages (landing, catalog, collections, items, the map-session form) run no
# script at all: a policy that refuses every script means markup slipped past autoescaping
# still cannot run. Only script, plugins, <base> and form targets are restricted: the pages
# link to map pages that other origins may embed, and what they load is otherwise harmless.
PAGE_CSP = (
    "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200):
    """A template response with the request and the links' base in its context (``base``,
    see api.urls.page_base) and the no-script policy."""
    context = {"base": page_base(request), **context}
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
