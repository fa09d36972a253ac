"""Map views: operations-centre pages defined as data, rendered with Folium.

A view (``ioc/maps/view_files/<id>.yaml``) names its layers, how each is drawn (GeoJSON features, vector
tiles, a heat map, a choropleth), its centre and zoom, refresh period, audience and language.
:func:`plan_view` resolves it against the catalog for one caller — a layer the caller may not
read is dropped, silently, as if it did not exist — and :func:`render_page` turns the plan into
one HTML page. The page holds no data: its script fetches GeoJSON and vector tiles from the
public API (``/collections/{id}/items``, ``/tiles/{ids}/{z}/{x}/{y}.pbf``) with the caller's
same-origin credentials, and every script and stylesheet comes from ioc itself
(:mod:`ioc.maps.elements`), so the page works without internet.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo

import yaml
from branca.element import JavascriptLink
from folium.elements import JSCSSMixin
from folium.map import Layer as FoliumLayer
from folium.template import Template
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ioc.catalog.access import Principal, can_read
from ioc.catalog.layers import Catalog, Layer
from ioc.errors import InvalidParameter, IocError, LayerNotFound
from ioc.maps import elements
from ioc.settings import PROJECT_ROOT

log = logging.getLogger("ioc.maps")

VIEWS_DIR = Path(__file__).parent / "view_files"
TIMEZONE = ZoneInfo("Asia/Ho_Chi_Minh")
Lang = Literal["vi", "en"]
LANGS: tuple[Lang, ...] = ("vi", "en")
RESERVED_VIEW_IDS = frozenset({"session", "preview", "static"})
POLYGONS = frozenset({"Polygon", "MultiPolygon"})
POINTS = frozenset({"Point", "MultiPoint"})
# Above these counts a layer is drawn from vector tiles rather than one GeoJSON request.
TILES_ABOVE = {"point": 3000, "line": 800, "polygon": 400}
# YlOrRd, 5 classes (ColorBrewer): the default choropleth ramp.
DEFAULT_RAMP = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")


# A CSP source expression: a keyword, a scheme ("https:") or a host source with optional
# scheme, wildcard subdomain, port and path (CSP Level 3, "source-expression").
_CSP_SOURCE = re.compile(
    r"^(?:'self'|'none'|[a-z][a-z0-9+.-]*:|(?:[a-z][a-z0-9+.-]*://)?(?:\*\.)?[a-z0-9-]+"
    r"(?:\.[a-z0-9-]+)*(?::(?:\d{1,5}|\*))?(?:/[^\s;,'\"]*)?)$",
    re.I,
)


class MapsSettings(BaseSettings):
    """Map pages (``IOC_MAPS_*``)."""

    model_config = SettingsConfigDict(env_prefix="IOC_MAPS_", env_file=".env", extra="ignore")

    frame_ancestors: str = Field(
        default="'self'",
        description="CSP frame-ancestors sources allowed to embed map pages in an iframe, "
        "space-separated (e.g. \"'self' https://portal.hochiminhcity.gov.vn\").",
    )
    views_dir: Path = Field(default=VIEWS_DIR, description="Folder of the view YAML files.")
    vendor_dir: Path = Field(
        default=PROJECT_ROOT / "node_modules",
        description="npm packages served under /static/vendor.",
    )
    session_hours: int = Field(
        default=12, ge=1, le=24 * 30, description="Lifetime of the operator map-session cookie."
    )

    @field_validator("frame_ancestors")
    @classmethod
    def _sources(cls, value: str) -> str:
        # The value goes into a response header: sources only, no separators or line breaks.
        if not value.replace(" ", "").isprintable():
            raise ValueError("frame_ancestors must be on one line")
        tokens = value.split()
        if not tokens:
            raise ValueError("frame_ancestors needs at least one source ('none' to forbid)")
        for token in tokens:
            if not _CSP_SOURCE.match(token):
                raise ValueError(f"invalid frame-ancestors source {token!r}")
        return " ".join(tokens)


class ViewNotFound(LayerNotFound):
    """Unknown map view, or one the caller may not open (the same answer on purpose)."""


class ViewError(IocError):
    """A view file that cannot be read or does not validate."""


# --- the view model ------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Colour = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]
LayerId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")]
Seconds = Annotated[int, Field(ge=0, le=86_400)]


class Localized(_Model):
    """A text in Vietnamese and English."""

    vi: str = Field(min_length=1)
    en: str = Field(min_length=1)

    def get(self, lang: Lang) -> str:
        return self.vi if lang == "vi" else self.en


class StyleOverride(_Model):
    """Changes to a layer's catalog style for one view."""

    color: Colour | None = None
    fill: Colour | None = None
    opacity: float | None = Field(default=None, ge=0, le=1)
    width: float | None = Field(default=None, gt=0)
    radius: float | None = Field(default=None, gt=0)


class BasemapLayer(StyleOverride):
    """One of ioc's own layers drawn as the background (vector tiles, not interactive)."""

    layer: LayerId


class Basemap(_Model):
    """The background drawn from ioc's own layers: no third-party tiles at all."""

    background: Colour = "#0b1220"
    layers: list[BasemapLayer] = Field(min_length=1)


class ViewLayer(_Model):
    """One layer of a view and how it is drawn."""

    layer: LayerId
    kind: Literal["auto", "features", "tiles", "heatmap", "choropleth"] = "auto"
    title: Localized | None = None
    show: bool = True
    live: bool = Field(default=False, description="Re-fetched every `refresh` seconds.")
    refresh: Seconds | None = Field(default=None, description="Overrides the view's period.")
    limit: int = Field(default=2000, ge=1, le=10_000, description="Features per GeoJSON request.")
    max_features: int = Field(
        default=10_000,
        ge=1,
        le=100_000,
        description="Pages of `limit` are followed up to this many features.",
    )
    query: dict[str, str | int | float] = Field(
        default_factory=dict, description="Extra query parameters of the items request."
    )
    property: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="Choropleth value, or heat-map weight.",
    )
    breaks: list[float] | None = Field(default=None, min_length=1)
    colors: list[Colour] | None = Field(default=None, min_length=2)
    legend_title: Localized | None = None
    style: StyleOverride | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind == "choropleth" and not self.property:
            raise ValueError(f"choropleth of {self.layer!r} needs a property")
        if self.breaks is not None:
            if self.breaks != sorted(self.breaks):
                raise ValueError(f"breaks of {self.layer!r} must be increasing")
            if self.colors is not None and len(self.colors) != len(self.breaks) + 1:
                raise ValueError(f"{self.layer!r}: n breaks need n + 1 colors")
        return self


class MapView(_Model):
    """A map page defined as data."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,40}$")
    title: Localized
    description: Localized
    audience: Literal["public", "internal"]
    layout: Literal["wall", "portal", "preview"] = "portal"
    theme: Literal["dark", "light"] = "light"
    language: Lang = "vi"
    center: tuple[float, float] = Field(description="(lat, lon), EPSG:4326.")
    zoom: int = Field(ge=0, le=22)
    min_zoom: int = Field(default=8, ge=0, le=22)
    max_zoom: int = Field(default=19, ge=0, le=22)
    refresh: Seconds = Field(default=0, description="Period of live layers; 0 = never.")
    basemap: Basemap | None = None
    layers: list[ViewLayer] = Field(min_length=1)
    search: bool = False
    whats_here: bool = False
    clock: bool = False
    legend: bool = True
    layer_control: bool = True
    fit_extent: bool = False

    @model_validator(mode="after")
    def _check(self) -> Self:
        lat, lon = self.center
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError("center is (lat, lon) in degrees")
        if not self.min_zoom <= self.zoom <= self.max_zoom:
            raise ValueError("zoom must lie between min_zoom and max_zoom")
        if self.id in RESERVED_VIEW_IDS:
            raise ValueError(f"view id {self.id!r} is reserved")
        ids = [la.layer for la in self.layers]
        if len(set(ids)) != len(ids):
            raise ValueError("a layer appears twice in the view")
        if 0 < self.refresh < 5 or any(0 < (la.refresh or 0) < 5 for la in self.layers):
            raise ValueError("refresh periods are 0 (never) or at least 5 seconds")
        return self


def load_view(path: Path) -> MapView:
    """Read and validate one view file; its id must be its file name."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        view = MapView.model_validate(doc)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ViewError(f"Map view {path.name} is invalid: {exc}") from exc
    if view.id != path.stem:
        raise ViewError(f"Map view {path.name} has id '{view.id}': it must be '{path.stem}'.")
    return view


def load_views(directory: Path = VIEWS_DIR) -> dict[str, MapView]:
    """Every view in the folder, by id, in file-name order."""
    return {view.id: view for view in map(load_view, sorted(directory.glob("*.yaml")))}


def can_open(principal: Principal, view: MapView) -> bool:
    """Public views are for everyone; internal ones for any authenticated city user."""
    return view.audience == "public" or principal.authenticated


def get_view(views: dict[str, MapView], view_id: str, principal: Principal) -> MapView:
    """The view, or ViewNotFound when unknown or not for this caller (the same answer)."""
    view = views.get(view_id)
    if view is None or not can_open(principal, view):
        raise ViewNotFound(f"There is no map view '{view_id}'.", parameter="view")
    return view


def visible_views(views: dict[str, MapView], principal: Principal) -> list[MapView]:
    """The views the caller may open."""
    return [view for view in views.values() if can_open(principal, view)]


def preview_view(layer: Layer) -> MapView:
    """An ad-hoc view of one layer for its department: legend, popups, fitted to its extent."""
    centre = (10.7769, 106.7009)
    if layer.extent:
        west, south, east, north = layer.extent
        centre = ((south + north) / 2, (west + east) / 2)
    return MapView(
        id=("preview-" + layer.id)[:41],
        title=Localized(vi=layer.title_vi, en=layer.title_en),
        description=Localized(
            vi=layer.description_vi or layer.title_vi, en=layer.description_en or layer.title_en
        ),
        audience="public" if layer.access == "public" else "internal",
        layout="preview",
        theme="light",
        center=centre,
        zoom=11,
        min_zoom=0,
        max_zoom=20,
        basemap=Basemap(
            background="#eef0f2",
            layers=[
                BasemapLayer(layer="water_areas"),
                BasemapLayer(layer="roads"),
                BasemapLayer(layer="wards"),
            ],
        ),
        layers=[ViewLayer(layer=layer.id)],
        fit_extent=True,
    )


# --- planning: the view for one caller -----------------------------------------------------


@dataclass(frozen=True)
class PlannedLayer:
    """A view layer the caller may read, with its catalog entry and resolved drawing kind."""

    spec: ViewLayer
    layer: Layer
    kind: str


@dataclass
class ViewPlan:
    """What one caller gets of a view: readable layers only."""

    view: MapView
    layers: list[PlannedLayer]
    basemap: list[tuple[BasemapLayer, Layer]]
    dropped: list[str] = field(default_factory=list)


def geometry_family(layer: Layer) -> str:
    """point, line or polygon."""
    if layer.geometry_type in POINTS:
        return "point"
    return "polygon" if layer.geometry_type in POLYGONS else "line"


def resolve_kind(spec: ViewLayer, layer: Layer) -> str:
    """``auto`` becomes tiles for large layers, GeoJSON features for small ones."""
    if spec.kind != "auto":
        return spec.kind
    large = layer.feature_count > TILES_ABOVE[geometry_family(layer)]
    return "tiles" if large else "features"


def plan_view(view: MapView, catalog: Catalog, principal: Principal) -> ViewPlan:
    """Resolve the view's layers for the caller; unreadable or unknown ones are dropped."""
    known = {layer.id: layer for layer in catalog}
    planned, dropped = [], []
    for spec in view.layers:
        layer = known.get(spec.layer)
        if layer is None or not can_read(principal, layer):
            dropped.append(spec.layer)
            continue
        planned.append(PlannedLayer(spec, layer, resolve_kind(spec, layer)))
    basemap = []
    for spec_b in view.basemap.layers if view.basemap else ():
        layer = known.get(spec_b.layer)
        if layer is None or not can_read(principal, layer):
            dropped.append(spec_b.layer)
            continue
        basemap.append((spec_b, layer))
    if dropped:
        log.debug(
            "map view layers dropped",
            extra={"view": view.id, "layers": dropped, "principal": principal.label},
        )
    return ViewPlan(view, planned, basemap, dropped)


# --- rendering -----------------------------------------------------------------------------

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


def _tiles_url(base: str, ids: Iterable[str]) -> str:
    return f"{base}/tiles/{','.join(ids)}/{{z}}/{{x}}/{{y}}.pbf"


def layer_config(
    item: PlannedLayer, view: MapView, lang: Lang, base: str, refresh: int | None = None
) -> dict[str, Any]:
    """What the page script needs to draw one layer (all of it from the public API).

    ``refresh`` overrides the period of the view's live layers (e.g. a faster wall screen).
    """
    layer, spec = item.layer, item.spec
    style = _style(layer, spec.style)
    if spec.live:
        period = refresh or (spec.refresh if spec.refresh is not None else view.refresh)
    else:
        period = 0
    config: dict[str, Any] = {
        "id": layer.id,
        "kind": item.kind,
        "title": _title(layer, spec, lang),
        "geometry": geometry_family(layer),
        "style": style,
        "attributes": _attributes(layer, lang),
        "refresh": period,
        "minZoom": layer.zoom_min,
        "maxZoom": layer.zoom_max,
    }
    if item.kind == "tiles":
        config["url"] = _tiles_url(base, [layer.id])
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
        config["property"] = spec.property
    return config


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
    plan: ViewPlan, *, lang: Lang, base: str, embed: bool, refresh: int | None = None
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
            "strings": {key: _t(key, lang) for key in STRINGS},
        },
        base_url=base,
    ).add_to(fmap)
    if plan.basemap:
        sublayers = [
            {
                "id": layer.id,
                "geometry": geometry_family(layer),
                "style": _basemap_style(spec, layer, view.theme),
            }
            for spec, layer in plan.basemap
        ]
        config = {
            "id": "basemap",
            "kind": "basemap",
            "title": _t("basemap", lang),
            "url": _tiles_url(base, [layer.id for _, layer in plan.basemap]),
            "layers": sublayers,
            "interactive": False,
            "refresh": 0,
            "pane": "ioc-base",
            # Leaflet's attribution control sets innerHTML too.
            "attribution": str(escape(_t("attribution", lang))),
        }
        IocLayer(
            "basemap", config, name=_t("basemap", lang), base_url=base, control=view.layer_control
        ).add_to(fmap)
    for item in plan.layers:
        config = layer_config(item, view, lang, base, refresh)
        IocLayer(
            item.kind, config, name=config["title"], show=item.spec.show, base_url=base
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
    refresh: int | None = None,
    now: datetime | None = None,
    nonce: str | None = None,
    meta_csp: bool = False,
) -> str:
    """The HTML page of a plan. ``base_url`` empty = same-origin (served by ioc).

    ``refresh`` (seconds, at least 5) overrides the period of the view's live layers. Every
    ``<script>`` carries ``nonce`` (a fresh one when not given): the server sends it in the
    page's Content-Security-Policy. ``meta_csp`` writes that policy's script rules into the page
    itself, for a file that is served by something else (``ioc maps render``).
    """
    view = plan.view
    lang = lang or view.language
    if lang not in LANGS:
        raise InvalidParameter(f"Unknown language '{lang}': use vi or en.", parameter="lang")
    if refresh is not None and not 5 <= refresh <= 86_400:
        raise InvalidParameter(
            "refresh is a period in seconds from 5 to 86400.", parameter="refresh"
        )
    base = base_url.rstrip("/")
    fmap = build_map(plan, lang=lang, base=base, embed=embed, refresh=refresh)
    figure = fmap.get_root()
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
    )
