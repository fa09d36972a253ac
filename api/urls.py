"""The public base URL of every link ioc hands out: one place, so a reverse proxy with a
path prefix (``IOC_PUBLIC_URL=https://gis.example/ioc``) gets links that work."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.datastructures import URL


def base_url(request: Request) -> str:
    """IOC_PUBLIC_URL without its trailing slash when set, else the request's
    ``scheme://host`` and root path: the prefix of every absolute link."""
    public = request.app.state.settings.server.public_url
    return (public or str(request.base_url)).rstrip("/")


def page_base(request: Request) -> str:
    """The prefix of links in HTML pages ioc serves: IOC_PUBLIC_URL when set, else only the
    root path (root-relative links keep working whatever host name the browser used)."""
    public = request.app.state.settings.server.public_url
    return (public or request.scope.get("root_path", "")).rstrip("/")


def base_path(request: Request) -> str:
    """The path part of the public base (``/ioc`` behind a prefix, else empty)."""
    return urlsplit(base_url(request)).path.rstrip("/")


def app_path(request: Request) -> str:
    """The request's path below the app's root path (what the routes match)."""
    root = request.scope.get("root_path", "")
    path = request.url.path
    return path[len(root) :] if root and path.startswith(root) else path


def public_request_url(request: Request) -> URL:
    """The URL of this request as the client sees it (for self and paging links)."""
    query = f"?{request.url.query}" if request.url.query else ""
    return URL(f"{base_url(request)}{app_path(request)}{query}")


async def get_base_url(request: Request) -> str:
    """Dependency form of :func:`base_url`."""
    return base_url(request)


BaseUrlDep = Annotated[str, Depends(get_base_url)]
