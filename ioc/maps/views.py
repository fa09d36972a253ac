"""Map views: operations-centre pages defined as data, rendered with Folium.

A view (``ioc/maps/view_files/<id>.yaml``) names its layers, how each is drawn (GeoJSON features, vector
tiles, a heat map, a choropleth), which of them are live, its centre and zoom, audience and
language.
This module is the view model and its loading: :func:`plan_view` resolves a view against the
catalog for one caller — a layer the caller may not read is dropped, silently, as if it did not
exist. :func:`ioc.maps.render.render_page` turns the plan into one HTML page.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ioc.catalog.access import Principal, can_read
from ioc.catalog.layers import Catalog, Layer
from ioc.errors import ConfigError, LayerNotFound
from ioc.settings import PROJECT_ROOT

log = logging.getLogger("ioc.maps")

VIEWS_DIR = Path(__file__).parent / "view_files"
Lang = Literal["vi", "en"]
LANGS: tuple[Lang, ...] = ("vi", "en")
RESERVED_VIEW_IDS = frozenset({"session", "preview", "static"})
POLYGONS = frozenset({"Polygon", "MultiPolygon"})
POINTS = frozenset({"Point", "MultiPoint"})
# Above these counts a layer is drawn from vector tiles rather than one GeoJSON request.
TILES_ABOVE = {"point": 3000, "line": 800, "polygon": 400}


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


class ViewError(ConfigError):
    """A view file that cannot be read or does not validate."""


# --- the view model ------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_timer(data: Any) -> Any:
    """A view file of before the change events says why its ``refresh`` is refused."""
    if isinstance(data, dict) and "refresh" in data:
        raise ValueError(
            "'refresh' is gone: live layers follow the change events (GET /events) without "
            "a timer; remove it and mark the layer 'live: true'"
        )
    return data


Colour = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]
LayerId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")]


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
    live: bool = Field(
        default=False, description="Follows the layer's change events (GET /events) in place."
    )
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

    @model_validator(mode="before")
    @classmethod
    def _no_refresh(cls, data: Any) -> Any:
        return _no_timer(data)

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


class LabelLayer(_Model):
    """Names drawn on the map from one of ioc's layers (districts, wards, streets): the text of
    one attribute at the label points of ``/collections/{id}/labels``, between two zooms."""

    layer: LayerId
    property: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Holds the name.")
    kind: Literal["district", "ward", "street", "place"] = Field(
        default="place", description="The label's look (size, weight, spacing)."
    )
    min_zoom: float = Field(default=0, ge=0, le=22)
    max_zoom: float = Field(default=22, ge=0, le=22)

    @model_validator(mode="after")
    def _zooms(self) -> Self:
        if self.min_zoom > self.max_zoom:
            raise ValueError(f"labels of {self.layer!r}: min_zoom is above max_zoom")
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
    basemap: Basemap | None = None
    layers: list[ViewLayer] = Field(min_length=1)
    labels: list[LabelLayer] = Field(
        default_factory=list, description="Place and street names, placed first to last."
    )
    search: bool = False
    whats_here: bool = False
    clock: bool = False
    legend: bool = True
    layer_control: bool = True
    fit_extent: bool = False

    @model_validator(mode="before")
    @classmethod
    def _no_refresh(cls, data: Any) -> Any:
        return _no_timer(data)

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
        basemap=city_basemap(),
        # Any layer may change (item writes, publishes): a preview follows its events.
        layers=[ViewLayer(layer=layer.id, live=True)],
        fit_extent=True,
    )


def city_basemap() -> Basemap:
    """ioc's own light background (water, roads, wards): layer previews, the publishing page."""
    return Basemap(
        background="#eef0f2",
        layers=[
            BasemapLayer(layer="water_areas"),
            BasemapLayer(layer="roads"),
            BasemapLayer(layer="wards"),
        ],
    )


def readable_basemap(
    basemap: Basemap, catalog: Catalog, principal: Principal
) -> list[tuple[BasemapLayer, Layer]]:
    """The basemap layers the caller may read, with their catalog entries."""
    known = {layer.id: layer for layer in catalog}
    return [
        (spec, known[spec.layer])
        for spec in basemap.layers
        if spec.layer in known and can_read(principal, known[spec.layer])
    ]


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
    labels: list[tuple[LabelLayer, Layer]] = field(default_factory=list)


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
    labels = []
    for spec_l in view.labels:
        layer = known.get(spec_l.layer)
        # Names are data too: a label source the caller may not read is left out.
        if layer is None or not can_read(principal, layer) or not layer.attribute(spec_l.property):
            dropped.append(spec_l.layer)
            continue
        labels.append((spec_l, layer))
    if dropped:
        log.debug(
            "map view layers dropped",
            extra={"view": view.id, "layers": dropped, "principal": principal.label},
        )
    return ViewPlan(view, planned, basemap, dropped, labels)
