"""Browser assets of the map pages and the Folium elements that load them from ioc itself, so a
page works without internet.

Leaflet and its plugins come from the npm registry at set-up (``package.json`` +
``package-lock.json`` at the repository root, ``npm ci --omit=dev`` in ``scripts/setup.sh``) into
``node_modules/``; ioc's own script and stylesheet live in ``ioc/maps/js/``. Both are served under
``/static`` (``/static/vendor/<package>/<file>`` and ``/static/maps/<file>``) by ``api/static.py``. Folium's elements
point at public CDNs by default: every Folium class used by the map pages is subclassed here with
``default_js``/``default_css`` rewritten to those local URLs, so that loading a page makes no
request outside the server's origin.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import folium
from folium.template import Template

from ioc.settings import PROJECT_ROOT

MAP_JS_DIR = Path(__file__).parent / "js"
NODE_MODULES = PROJECT_ROOT / "node_modules"
STATIC_PREFIX = "/static"

# Every third-party file a map page loads: logical name -> (npm package, file in the package).
# The package must be a dependency in package.json; tests check each file exists after set-up.
VENDOR: dict[str, tuple[str, str]] = {
    "leaflet_js": ("leaflet", "dist/leaflet.js"),
    "leaflet_css": ("leaflet", "dist/leaflet.css"),
    "vectorgrid_js": ("leaflet.vectorgrid", "dist/Leaflet.VectorGrid.bundled.min.js"),
    "heat_js": ("leaflet.heat", "dist/leaflet-heat.js"),
    # The dashboards' charts (ioc/dashboards/page.py).
    "echarts_js": ("echarts", "dist/echarts.min.js"),
}
# ioc's own files in ioc/maps/js/.
OWN: dict[str, str] = {
    "ioc_maps_js": "ioc-maps.js",
    "ioc_maps_css": "ioc-maps.css",
}


def vendor_packages() -> frozenset[str]:
    """npm packages whose files may be served (the others under node_modules are not)."""
    return frozenset(package for package, _ in VENDOR.values())


def asset_url(name: str, base_url: str = "") -> str:
    """URL of an asset by logical name; ``base_url`` empty means same-origin absolute paths."""
    base = base_url.rstrip("/")
    if name in VENDOR:
        package, path = VENDOR[name]
        return f"{base}{STATIC_PREFIX}/vendor/{package}/{path}"
    if name in OWN:
        return f"{base}{STATIC_PREFIX}/maps/{OWN[name]}"
    raise KeyError(f"unknown map asset {name!r}")


def missing_vendor_files(vendor_dir: Path = NODE_MODULES) -> list[str]:
    """Vendor files that are not installed (empty when `npm ci` has run)."""
    return [
        f"{package}/{path}"
        for package, path in VENDOR.values()
        if not (vendor_dir / package / path).is_file()
    ]


_URL_ATTR = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^)"']+)""", re.I)


def external_urls(html: str, base_url: str = "") -> list[str]:
    """Absolute URLs in src/href/url() of a page that are not under ``base_url``.

    A same-origin page (``base_url`` empty) may only use relative or root-relative URLs.
    """
    base = base_url.rstrip("/")
    found = []
    for match in _URL_ATTR.finditer(html):
        url = match.group(1) or match.group(2)
        if url.startswith("//") or re.match(r"^[a-z][a-z0-9+.-]*:", url, re.I):
            if url.startswith(("data:", "blob:", "#", "javascript:void")):
                continue
            if base and (url == base or url.startswith(base + "/")):
                continue
            found.append(url)
    return found


# --- Folium classes with local assets ------------------------------------------------------


class Map(folium.Map):
    """``folium.Map`` with Leaflet from ioc (no jQuery/Bootstrap: nothing on the pages needs them).

    The template is Folium's without its ``user-scalable=no`` viewport (the page sets its own,
    zoomable one, for phones), without the jQuery ``document.ready`` hook, and without the inline
    script that sets ``L_NO_TOUCH``/``L_DISABLE_3D`` (always false here, as Leaflet assumes when
    they are unset): the page's CSP allows no script without its nonce (docs/security.md).
    """

    default_js: list[tuple[str, str]] = []
    default_css: list[tuple[str, str]] = []

    _template = Template(
        """
        {% macro header(this, kwargs) %}
            <style>
                #{{ this.get_name() }} {
                    position: {{ this.position }};
                    width: {{ this.width[0] }}{{ this.width[1] }};
                    height: {{ this.height[0] }}{{ this.height[1] }};
                    left: {{ this.left[0] }}{{ this.left[1] }};
                    top: {{ this.top[0] }}{{ this.top[1] }};
                }
            </style>
        {% endmacro %}

        {% macro html(this, kwargs) %}
            <div class="folium-map ioc-map" id={{ this.get_name()|tojson }}></div>
        {% endmacro %}

        {% macro script(this, kwargs) %}
            var {{ this.get_name() }} = L.map(
                {{ this.get_name()|tojson }},
                {
                    center: {{ this.location|tojson }},
                    crs: L.CRS.{{ this.crs }},
                    ...{{ this.options|tojavascript }}
                }
            );
            {%- if this.control_scale %}
            L.control.scale({imperial: false}).addTo({{ this.get_name() }});
            {%- endif %}
            {%- if this.zoom_control_position %}
            L.control.zoom({position: {{ this.zoom_control|tojson }}}).addTo({{ this.get_name() }});
            {%- endif %}
        {% endmacro %}
        """
    )

    def __init__(self, *args: Any, base_url: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_js = [("leaflet", asset_url("leaflet_js", base_url))]
        self.default_css = [
            ("leaflet_css", asset_url("leaflet_css", base_url)),
            ("ioc_maps_css", asset_url("ioc_maps_css", base_url)),
        ]


class LayerControl(folium.LayerControl):
    """Folium's layer switcher (it loads no asset of its own)."""


def layer_assets(base_url: str = "") -> list[tuple[str, str]]:
    """Scripts every ioc map layer needs, in load order (after Leaflet)."""
    return [
        ("leaflet_vectorgrid", asset_url("vectorgrid_js", base_url)),
        ("leaflet_heat", asset_url("heat_js", base_url)),
        ("ioc_maps", asset_url("ioc_maps_js", base_url)),
    ]
