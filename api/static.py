"""``/static``: the map pages' browser assets (npm packages and ioc's own script), served by ioc
itself so a page works without internet. What the files are is ``ioc.maps.elements``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.routing import Mount, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ioc.dashboards.page import JS_DIR as DASHBOARD_JS_DIR
from ioc.maps.elements import MAP_JS_DIR, vendor_packages
from ioc.web import STATIC_DIR as WEB_DIR


class VendorFiles(StaticFiles):
    """StaticFiles over node_modules limited to the packages the map pages use."""

    def __init__(self, *, directory: Path, packages: frozenset[str]) -> None:
        super().__init__(directory=directory, check_dir=False)
        self.allowed_packages = packages

    def lookup_path(self, path: str) -> tuple[str, Any]:
        package = path.strip("/").split("/", 1)[0]
        if package not in self.allowed_packages:
            return "", None
        return super().lookup_path(path)

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Any:
        response = super().file_response(full_path, stat_result, scope, status_code)
        # Pinned by package-lock.json: a day of caching, then revalidation by ETag.
        response.headers.setdefault("Cache-Control", "public, max-age=86400")
        return response


def static_files(vendor_dir: Path) -> Router:
    """The ASGI app mounted at ``/static``: ``/vendor/...`` (npm, ``IOC_MAPS_VENDOR_DIR``) and
    ``/maps/...``, ``/dashboards/...`` and ``/web/...`` (ioc; web: the HTML pages' own)."""
    return Router(
        routes=[
            Mount("/vendor", app=VendorFiles(directory=vendor_dir, packages=vendor_packages())),
            Mount("/maps", app=StaticFiles(directory=MAP_JS_DIR)),
            Mount("/dashboards", app=StaticFiles(directory=DASHBOARD_JS_DIR)),
            Mount("/web", app=StaticFiles(directory=WEB_DIR)),
        ]
    )
