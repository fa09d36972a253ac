"""Rendering a planned map view (:func:`ioc.maps.views.plan_view`) to one HTML page with Folium.

The page holds no data: its script fetches GeoJSON and vector tiles from the public API
(``/collections/{id}/items``, ``/tiles/{ids}/{z}/{x}/{y}.pbf``, ``/collections/{id}/grid``) with the
caller's same-origin credentials and follows the live layers' change events (``/events``), and every script and stylesheet comes from ioc itself (:mod:`ioc.maps.elements`),
so the page works without internet. Each page has its own nonce and Content-Security-Policy.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from branca.element import Figure, JavascriptLink
from folium.elements import JSCSSMixin
from folium.map import Layer as FoliumLayer
from folium.template import Template
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from ioc.catalog.layers import Layer
from ioc.errors import InvalidParameter
from ioc.maps import elements
from ioc.maps.views import (
    LANGS,
    BasemapLayer,
    LabelLayer,
    Lang,
    MapView,
    PlannedLayer,
    StyleOverride,
    ViewLayer,
    ViewPlan,
    geometry_family,
)

TIMEZONE = ZoneInfo("Asia/Ho_Chi_Minh")
# The version of a tile URL of these layers (``?v=``, tiles.versions), when the server gives one.
TileVersions = Callable[[Sequence[Layer]], object] | None
# YlOrRd, 5 classes (ColorBrewer): the default choropleth ramp.
DEFAULT_RAMP = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")

STRINGS: dict[str, dict[Lang, str]] = {
    "layers": {"vi": "Lớp bản đồ", "en": "Layers"},
    "legend": {"vi": "Chú giải", "en": "Legend"},
    "updated": {"vi": "Cập nhật", "en": "Updated"},
    "never": {"vi": "chưa cập nhật", "en": "not yet"},
    "search": {"vi": "Tìm địa chỉ…", "en": "Search an address…"},
    "search_button": {"vi": "Tìm", "en": "Search"},
    "whats_here": {"vi": "Ở đây có gì?", "en": "What is here?"},
    "nothing": {"vi": "Không tìm thấy gì.", "en": "Nothing found."},
    "loading": {"vi": "Đang tải…", "en": "Loading…"},
    "error": {"vi": "Không tải được dữ liệu", "en": "Could not load data"},
    "basemap": {"vi": "Nền bản đồ", "en": "Basemap"},
    "few": {"vi": "Ít", "en": "Few"},
    "many": {"vi": "Nhiều", "en": "Many"},
    "no_data": {"vi": "Không có số liệu", "en": "No data"},
    "features": {"vi": "đối tượng", "en": "features"},
    "click_hint": {
        "vi": "Chạm vào bản đồ để xem thông tin tại chỗ.",
        "en": "Tap the map to see what is there.",
    },
    "attribution": {
        "vi": "Dữ liệu: các sở, ngành TP.HCM qua ioc",
        "en": "Data: HCMC departments via ioc",
    },
    "maps": {"vi": "Bản đồ", "en": "Maps"},
    "close": {"vi": "Đóng", "en": "Close"},
    "flood_risk": {"vi": "Vùng nguy cơ ngập", "en": "Flood risk zone"},
    "flood_points_near": {"vi": "Điểm ngập trong 500 m", "en": "Flooded spots within 500 m"},
    "planning": {"vi": "Quy hoạch, sử dụng đất", "en": "Planning, land use"},
    "nearest_hospital": {"vi": "Bệnh viện gần nhất", "en": "Nearest hospital"},
    "nearest_school": {"vi": "Trường học gần nhất", "en": "Nearest school"},
    "nearest_pumping_station": {"vi": "Trạm bơm gần nhất", "en": "Nearest pumping station"},
    "nearest_bus_stop": {"vi": "Trạm xe buýt gần nhất", "en": "Nearest bus stop"},
    "reports_near": {"vi": "Phản ánh gần đây trong 300 m", "en": "Recent reports within 300 m"},
    # The live indicator (the change-event stream): its states and the last event's time.
    "live_connecting": {"vi": "Đang kết nối…", "en": "Connecting…"},
    "live_on": {"vi": "Trực tiếp", "en": "Live"},
    "live_lost": {"vi": "Mất kết nối, đang thử lại…", "en": "Connection lost, retrying…"},
    "live_last": {"vi": "Sự kiện gần nhất", "en": "Last event"},
    "live_none": {"vi": "chưa có", "en": "none yet"},
    "labels": {"vi": "Tên địa danh, đường phố", "en": "Place and street names"},
}

# Background layers: style by geometry family and theme (a layer's own colours are for overlays).
BASEMAP_STYLE: dict[str, dict[str, dict[str, Any]]] = {
    "dark": {
        "polygon": {"color": "#3d4f6b", "fill": "#14233a", "width": 0.8, "opacity": 0.9},
        "line": {"color": "#35465f", "width": 1.2, "opacity": 0.9},
        "point": {"color": "#506482", "radius": 2, "opacity": 0.8},
    },
    "light": {
        "polygon": {"color": "#9aa5b1", "fill": "#f7f7f4", "width": 0.8, "opacity": 0.9},
        "line": {"color": "#c8c2b4", "width": 1.2, "opacity": 1.0},
        "point": {"color": "#9aa5b1", "radius": 2, "opacity": 0.8},
    },
}
WATER_STYLE = {
    "dark": {"color": "#16365a", "fill": "#10304f"},
    "light": {"color": "#8fc1d6", "fill": "#b5d9e8"},
}


def _t(key: str, lang: Lang) -> str:
    return STRINGS[key][lang]


def _title(layer: Layer, spec: ViewLayer | None, lang: Lang) -> str:
    if spec is not None and spec.title is not None:
        return spec.title.get(lang)
    return layer.title_vi if lang == "vi" else layer.title_en


def _style(layer: Layer, override: StyleOverride | None) -> dict[str, Any]:
    style = {
        k: v
        for k, v in layer.style.items()
        if k in ("color", "fill", "opacity", "width", "radius", "by")
    }
    legend = layer.style.get("legend") or []
    if style.get("by"):
        style["categories"] = {
            category_key(entry["value"]): entry["color"]
            for entry in legend
            if entry.get("value") is not None
        }
    style.setdefault("color", "#3388ff")
    if override is not None:
        style.update(override.model_dump(exclude_none=True, exclude={"layer"}))
    return style


def category_key(value: Any) -> str:
    """A category value as JavaScript's ``String(value)`` writes it (the page's lookup key)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _basemap_style(spec: BasemapLayer, layer: Layer, theme: str) -> dict[str, Any]:
    style = dict(BASEMAP_STYLE[theme][geometry_family(layer)])
    if "water" in layer.id or layer.domain == "water":
        style.update(WATER_STYLE[theme])
    style.update(spec.model_dump(exclude_none=True, exclude={"layer"}))
    return style


def basemap_config(
    basemap: list[tuple[BasemapLayer, Layer]],
    theme: str,
    lang: Lang,
    base: str,
    versions: TileVersions = None,
) -> dict[str, Any]:
    """How a page draws the basemap: one vector tile URL for its layers, a style for each."""
    sublayers = [
        {
            "id": layer.id,
            "geometry": geometry_family(layer),
            "style": _basemap_style(spec, layer, theme),
        }
        for spec, layer in basemap
    ]
    return {
        "id": "basemap",
        "kind": "basemap",
        "title": _t("basemap", lang),
        "url": _tiles_url(base, [layer for _, layer in basemap], versions),
        "layers": sublayers,
        "interactive": False,
        "live": False,
        "pane": "ioc-base",
        # Leaflet's attribution control sets innerHTML too.
        "attribution": str(escape(_t("attribution", lang))),
    }


def _attributes(layer: Layer, lang: Lang) -> list[dict[str, Any]]:
    return [
        {"name": a.name, "label": a.label_vi if lang == "vi" else a.label_en, "unit": a.unit}
        for a in layer.attributes[:16]
    ]


def _legend_entries(layer: Layer, style: dict[str, Any], lang: Lang) -> list[dict[str, str]]:
    entries = [
        {"label": (e.get("label") or {}).get(lang) or str(e.get("value", "")), "color": e["color"]}
        for e in layer.style.get("legend") or []
        if e.get("color")
    ]
    if not entries:
        entries = [
            {"label": _title(layer, None, lang), "color": style.get("fill") or style["color"]}
        ]
    elif len(entries) == 1 and style.get("color") and not style.get("by"):
        entries[0]["color"] = style.get("fill") or style["color"]
    return entries


def _items_url(base: str, layer: Layer, spec: ViewLayer) -> str:
    from urllib.parse import urlencode

    params = {"limit": spec.limit, **spec.query}
    return f"{base}/collections/{layer.id}/items?{urlencode(params)}"


# Items parameters that select features (the grid aggregate takes these, and a view that sets
# one cannot update a feature by fetching it alone: it might no longer match).
SELECTING = ("filter", "filter-lang", "filter-crs", "datetime", "bbox")


def _grid_url(base: str, layer: Layer, spec: ViewLayer) -> str:
    from urllib.parse import urlencode

    params = {k: v for k, v in spec.query.items() if k in SELECTING and k != "bbox"}
    if spec.property:
        params["weight"] = spec.property
    query = f"?{urlencode(params)}" if params else ""
    return f"{base}/collections/{layer.id}/grid{query}"


def _tiles_url(base: str, layers: Sequence[Layer], versions: TileVersions) -> str:
    url = f"{base}/tiles/{','.join(la.id for la in layers)}/{{z}}/{{x}}/{{y}}.pbf"
    return f"{url}?v={versions(layers)}" if versions else url


def layer_config(
    item: PlannedLayer, view: MapView, lang: Lang, base: str, versions: TileVersions = None
) -> dict[str, Any]:
    """What the page script needs to draw one layer (all of it from the public API)."""
    layer, spec = item.layer, item.spec
    style = _style(layer, spec.style)
    config: dict[str, Any] = {
        "id": layer.id,
        "kind": item.kind,
        "title": _title(layer, spec, lang),
        "geometry": geometry_family(layer),
        "style": style,
        "attributes": _attributes(layer, lang),
        "live": spec.live,
        "collection": f"{base}/collections/{layer.id}",
        "filtered": any(k in SELECTING for k in spec.query),
        "minZoom": layer.zoom_min,
        "maxZoom": layer.zoom_max,
    }
    if item.kind == "tiles":
        config["url"] = _tiles_url(base, [layer], versions)
        config["interactive"] = True
    else:
        config["url"] = _items_url(base, layer, spec)
        config["max"] = spec.max_features
    if item.kind == "choropleth":
        attribute = layer.attribute(spec.property or "")
        config.update(
            property=spec.property,
            breaks=spec.breaks,
            outline="#8da2c0" if view.theme == "dark" else "#1b1f24",
            colors=list(spec.colors or DEFAULT_RAMP),
            legendTitle=(
                spec.legend_title.get(lang)
                if spec.legend_title
                else (attribute.label_vi if lang == "vi" else attribute.label_en)
                if attribute
                else spec.property
            ),
            unit=attribute.unit if attribute else None,
        )
    if item.kind == "heatmap":
        # Counted by the server over the view (every feature), not sampled from the items.
        config["gridUrl"] = _grid_url(base, layer, spec)
    return config


def labels_config(labels: list[tuple[LabelLayer, Layer]], base: str) -> dict[str, Any]:
    """What the page script needs to name places and streets: one label source per layer
    (``/collections/{id}/labels``), placed in this order; the caller may read every one."""
    return {
        "id": "labels",
        "sources": [
            {
                "id": layer.id,
                "kind": spec.kind,
                "url": f"{base}/collections/{layer.id}/labels?{urlencode({'property': spec.property})}",
                "minZoom": spec.min_zoom,
                "maxZoom": spec.max_zoom,
            }
            for spec, layer in labels
        ],
    }


def events_url(plan: ViewPlan, base: str) -> str | None:
    """The change-event stream of the plan's live layers (all readable by the caller: the
    plan holds no other), or None when nothing on the page is live."""
    ids = [item.layer.id for item in plan.layers if item.spec.live]
    return f"{base}/events?layers={','.join(ids)}" if ids else None


class IocLayer(JSCSSMixin, FoliumLayer):
    """A Folium layer drawn by ioc's page script from the public API (never embedded data)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
            var {{ this.get_name() }} = IocMaps.{{ this.factory }}(
                {{ this._parent.get_name() }}, {{ this.config|tojson }});
        {% endmacro %}
        """
    )
    FACTORIES = {
        "features": "features",
        "tiles": "tiles",
        "heatmap": "heatmap",
        "choropleth": "choropleth",
        "basemap": "tiles",
        "labels": "labels",
    }

    def __init__(
        self,
        kind: str,
        config: dict[str, Any],
        *,
        name: str,
        show: bool = True,
        control: bool = True,
        base_url: str = "",
    ) -> None:
        # Leaflet's layer control puts a layer's name in the page as innerHTML: the name of a
        # layer is a catalog title (written by a department), so it is handed over as HTML text.
        super().__init__(name=str(escape(name)), overlay=True, control=control, show=show)
        self._name = "IocLayer"
        self.factory = self.FACTORIES[kind]
        self.config = config
        self.default_js = elements.layer_assets(base_url)
        self.default_css = []


class IocPage(JSCSSMixin):
    """Page behaviour: panes, clock, last-update stamp, search, 'what is here', fitting."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
            IocMaps.page({{ this._parent.get_name() }}, {{ this.config|tojson }});
        {% endmacro %}
        """
    )

    def __init__(self, config: dict[str, Any], *, base_url: str = "") -> None:
        super().__init__()
        self._name = "IocPage"
        self.config = config
        self.default_js = elements.layer_assets(base_url)
        self.default_css = []


def build_map(
    plan: ViewPlan, *, lang: Lang, base: str, embed: bool, versions: TileVersions = None
) -> elements.Map:
    """The Folium map of a plan: basemap, layers, layer switcher, page behaviour."""
    view = plan.view
    fmap = elements.Map(
        location=list(view.center),
        zoom_start=view.zoom,
        tiles=None,
        min_zoom=view.min_zoom,
        max_zoom=view.max_zoom,
        control_scale=not embed,
        prefer_canvas=False,
        zoom_control="topleft" if view.layout != "wall" else "bottomright",
        position="absolute",
        base_url=base,
        attribution_control=True,
    )
    # Page behaviour first: panes exist and the view is fitted before any layer loads.
    extent, fit_min_zoom = None, None
    if view.fit_extent and plan.layers and plan.layers[0].layer.extent:
        west, south, east, north = plan.layers[0].layer.extent
        extent = [[south, west], [north, east]]
        if plan.layers[0].kind == "tiles":
            # Tiles are empty below the layer's zoom range: do not open on an empty map.
            fit_min_zoom = plan.layers[0].layer.zoom_min
    IocPage(
        {
            "lang": lang,
            "base": base,
            "layout": view.layout,
            "embed": embed,
            "background": view.basemap.background if view.basemap else None,
            "clock": view.clock and not embed,
            "search": view.search and not embed,
            "whatsHere": view.whats_here,
            "fitBounds": extent,
            "fitMinZoom": fit_min_zoom,
            "live": events_url(plan, base),
            "strings": {key: _t(key, lang) for key in STRINGS},
        },
        base_url=base,
    ).add_to(fmap)
    if plan.basemap:
        config = basemap_config(plan.basemap, view.theme, lang, base, versions)
        IocLayer(
            "basemap", config, name=_t("basemap", lang), base_url=base, control=view.layer_control
        ).add_to(fmap)
    for item in plan.layers:
        config = layer_config(item, view, lang, base, versions)
        IocLayer(
            item.kind, config, name=config["title"], show=item.spec.show, base_url=base
        ).add_to(fmap)
    if plan.labels:
        # Last: names go over every layer (their own pane; they never catch a click).
        IocLayer(
            "labels", labels_config(plan.labels, base), name=_t("labels", lang), base_url=base
        ).add_to(fmap)
    if view.layer_control and (plan.layers or plan.basemap):
        elements.LayerControl(collapsed=view.layout != "wall" or embed, position="topright").add_to(
            fmap
        )
    return fmap


def legend_items(plan: ViewPlan, lang: Lang) -> list[dict[str, Any]]:
    """Server-rendered legend rows (choropleth classes are filled in by the page script)."""
    items = []
    for item in plan.layers:
        title = _title(item.layer, item.spec, lang)
        common = {"id": item.layer.id, "title": title, "show": item.spec.show}
        if item.kind == "heatmap":
            items.append({**common, "kind": "heatmap"})
        elif item.kind == "choropleth":
            items.append({**common, "kind": "choropleth"})
        else:
            style = _style(item.layer, item.spec.style)
            items.append(
                {
                    **common,
                    "kind": "entries",
                    "geometry": geometry_family(item.layer),
                    "entries": _legend_entries(item.layer, style, lang),
                }
            )
    return items


_env = Environment(
    loader=FileSystemLoader(str(elements.MAP_JS_DIR)),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def new_nonce() -> str:
    """A fresh CSP nonce (128 bits, base64url): one per page response, never reused."""
    return secrets.token_urlsafe(16)


def content_security_policy(nonce: str, frame_ancestors: str = "'self'") -> str:
    """The CSP of a map page: scripts from ioc or carrying the page's nonce, nothing inline.

    No 'unsafe-inline' and no 'unsafe-eval' for scripts: Leaflet, Leaflet.VectorGrid and
    Leaflet.heat need neither, and a string a department wrote that somehow became markup cannot
    run. Styles keep 'unsafe-inline': Folium writes the map's size in a ``<style>`` element and
    the legend swatches carry ``style="--swatch: …"`` attributes (a nonce cannot cover
    attributes); CSS cannot run script, and img-src/connect-src keep it from reaching elsewhere.
    """
    return (
        f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
        "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; "
        f"form-action 'self'; frame-ancestors {frame_ancestors}"
    )


def _take_scripts(figure: Any) -> tuple[list[str], str]:
    """Folium's ``<script src>`` URLs, and the rest of the page header without them.

    The page writes the scripts itself, each with the nonce; any other script in the header would
    be inline script without it, which the CSP refuses, so it is an error here already.
    """
    urls = []
    for name, child in list(figure.header._children.items()):
        if isinstance(child, JavascriptLink):
            urls.append(child.url)
            del figure.header._children[name]
    header = figure.header.render()
    if "<script" in header.lower():
        raise RuntimeError("a Folium element put an inline script in the page header")
    return urls, header


def render_page(
    plan: ViewPlan,
    *,
    lang: Lang | None = None,
    embed: bool = False,
    base_url: str = "",
    page_path: str | None = None,
    now: datetime | None = None,
    nonce: str | None = None,
    meta_csp: bool = False,
    tile_versions: TileVersions = None,
) -> str:
    """The HTML page of a plan. ``base_url`` empty = same-origin (served by ioc).

    Every ``<script>`` carries ``nonce`` (a fresh one when not given): the server sends it in the
    page's Content-Security-Policy. ``meta_csp`` writes that policy's script rules into the page
    itself, for a file that is served by something else (``ioc maps render``).
    ``tile_versions`` gives the tile URLs their version (the server's tiles.versions: HTTP
    caches may keep such tiles for ever); without it they are unversioned.
    """
    view = plan.view
    lang = lang or view.language
    if lang not in LANGS:
        raise InvalidParameter(f"Unknown language '{lang}': use vi or en.", parameter="lang")
    base = base_url.rstrip("/")
    fmap = build_map(plan, lang=lang, base=base, embed=embed, versions=tile_versions)
    figure = fmap.get_root()
    # folium.Map places itself in a Figure on creation: the root has the html and script parts.
    assert isinstance(figure, Figure)
    for child in figure._children.values():
        child.render()
    scripts, header = _take_scripts(figure)
    nonce = nonce or new_nonce()
    csp = None
    if meta_csp:
        # A <meta> policy cannot hold frame-ancestors; the script rules are what matter here.
        origin = base if base else "'self'"
        csp = f"script-src {origin} 'nonce-{nonce}'; object-src 'none'; base-uri 'self'"
    page_path = page_path or f"/maps/{view.id}"
    other = "en" if lang == "vi" else "vi"
    switch = f"{base}{page_path}?lang={other}" + ("&embed=1" if embed else "")
    rendered_at = (now or datetime.now(TIMEZONE)).astimezone(TIMEZONE)
    return _env.get_template("page.html").render(
        view=view,
        lang=lang,
        embed=embed,
        base=base,
        plan=plan,
        title=view.title.get(lang),
        description=view.description.get(lang),
        t={key: _t(key, lang) for key in STRINGS},
        legend=legend_items(plan, lang),
        lang_switch=switch,
        other_lang=other,
        rendered_at=rendered_at.strftime("%H:%M:%S %d/%m/%Y"),
        map_header=Markup(header),
        map_html=Markup(figure.html.render()),
        map_script=Markup(figure.script.render()),
        scripts=scripts,
        nonce=nonce,
        meta_csp=csp,
        live=events_url(plan, base) is not None,
    )
