"""Layer manifests: one YAML file per layer under ``catalog/<domain>/<layer_id>.yaml``.

A manifest describes what a layer is (titles, owner, access level, geometry and SRID, attribute
schema, style) and where its data comes from (a real dataset file or the demo-city generator).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CATALOG_ROOT = Path(__file__).parent / "catalog"

# Departments after HCMC's 2025 reorganisation of city agencies.
DEPARTMENTS: dict[str, dict[str, str]] = {
    "construction": {"vi": "Sở Xây dựng", "en": "Department of Construction"},
    "agri_env": {
        "vi": "Sở Nông nghiệp và Môi trường",
        "en": "Department of Agriculture and Environment",
    },
    "planning": {"vi": "Sở Quy hoạch – Kiến trúc", "en": "Department of Planning and Architecture"},
    "health": {"vi": "Sở Y tế", "en": "Department of Health"},
    "education": {"vi": "Sở Giáo dục và Đào tạo", "en": "Department of Education and Training"},
    "industry_trade": {"vi": "Sở Công Thương", "en": "Department of Industry and Trade"},
    "home_affairs": {"vi": "Sở Nội vụ", "en": "Department of Home Affairs"},
    "science_tech": {
        "vi": "Sở Khoa học và Công nghệ",
        "en": "Department of Science and Technology",
    },
    "police": {"vi": "Công an Thành phố Hồ Chí Minh", "en": "Ho Chi Minh City Police"},
    "finance": {"vi": "Sở Tài chính", "en": "Department of Finance"},
    "culture_sports": {"vi": "Sở Văn hoá và Thể thao", "en": "Department of Culture and Sports"},
    "tourism": {"vi": "Sở Du lịch", "en": "Department of Tourism"},
}

DOMAINS: dict[str, dict[str, str]] = {
    "admin": {"vi": "Địa giới hành chính", "en": "Administrative units"},
    "flooding": {"vi": "Chống ngập và thoát nước", "en": "Flooding and drainage"},
    "transport": {"vi": "Giao thông", "en": "Transport"},
    "planning": {"vi": "Quy hoạch và xây dựng", "en": "Planning and building"},
    "cadastre": {"vi": "Đất đai và địa chính", "en": "Land and cadastre"},
    "public_services": {"vi": "Dịch vụ công", "en": "Public services"},
    "health": {"vi": "Y tế", "en": "Health"},
    "education": {"vi": "Giáo dục", "en": "Education"},
    "environment": {"vi": "Môi trường", "en": "Environment"},
    "utilities": {"vi": "Hạ tầng kỹ thuật", "en": "Utilities"},
    "citizen_reports": {"vi": "Phản ánh của người dân", "en": "Citizen reports"},
    "addresses": {"vi": "Địa chỉ", "en": "Addresses"},
    "socioeconomic": {"vi": "Kinh tế – xã hội", "en": "Socio-economic indicators"},
    "safety": {"vi": "An ninh, an toàn và ứng phó khẩn cấp", "en": "Safety and emergency response"},
    "culture_tourism": {"vi": "Văn hóa, thể thao và du lịch", "en": "Culture, sports and tourism"},
}

RESERVED_ATTRIBUTES = frozenset({"fid", "geom"})

Colour = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]
Scalar = str | bool | int | float
AttributeType = Literal["integer", "number", "text", "boolean", "date", "timestamp"]
GeometryType = Literal[
    "Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon"
]
Cadence = Literal[
    "realtime", "hourly", "daily", "weekly", "monthly", "quarterly", "yearly", "static"
]

# Python types a category value may have, per attribute type (a bool is also an int).
_VALUE_TYPES: dict[str, type | tuple[type, ...]] = {
    "integer": int, "number": (int, float), "text": str, "boolean": bool, "date": str, "timestamp": str
}  # fmt: skip


class ManifestError(ValueError):
    """A manifest file that cannot be read or does not validate."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Localized(_Model):
    """A text in Vietnamese and English."""

    vi: str = Field(min_length=1)
    en: str = Field(min_length=1)


class GeometrySpec(_Model):
    """Geometry type and SRID of the layer's table (9210 = VN-2000 / TM-3 105°45')."""

    type: GeometryType
    srid: Literal[4326, 9210] = 4326


class AttributeSpec(_Model):
    """One attribute (table column) of a layer."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    type: AttributeType
    label: Localized
    unit: str | None = None
    required: bool = False
    values: list[Scalar] | None = Field(default=None, min_length=1)
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.name in RESERVED_ATTRIBUTES:
            raise ValueError(f"attribute name {self.name!r} is reserved")
        if self.values is not None:
            if len(set(map(repr, self.values))) != len(self.values):
                raise ValueError(f"attribute {self.name!r} lists a value twice")
            for value in self.values:
                if isinstance(value, bool) != (self.type == "boolean") or not isinstance(
                    value, _VALUE_TYPES[self.type]
                ):
                    raise ValueError(f"value {value!r} does not fit {self.type} {self.name!r}")
        if self.range is not None:
            if self.type not in ("integer", "number"):
                raise ValueError(f"range is only allowed on numbers, not on {self.name!r}")
            if self.range[0] > self.range[1]:
                raise ValueError(f"range of {self.name!r} has min greater than max")
        return self


class LegendEntry(_Model):
    """One legend row; ``value`` is the category it stands for under a categorised style."""

    label: Localized
    color: Colour
    value: Scalar | None = None


class StyleSpec(_Model):
    """Default map style of a layer."""

    color: Colour
    fill: Colour | None = None
    opacity: float | None = Field(default=None, ge=0, le=1)
    width: float | None = Field(default=None, gt=0)
    radius: float | None = Field(default=None, gt=0)
    icon: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]*$")
    by: str | None = None
    legend: list[LegendEntry] = Field(min_length=1)


class SourceSpec(_Model):
    """Who produces the data, under which licence, and which real dataset file holds it."""

    name: str = Field(min_length=1)
    licence: str = Field(min_length=1)
    url: str | None = None
    dataset: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    filter: dict[str, list[Scalar]] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.filter is not None and self.dataset is None:
            raise ValueError("source.filter needs source.dataset")
        return self


class ZoomRange(_Model):
    """Zoom levels at which the layer is drawn."""

    min: int = Field(ge=0, le=24)
    max: int = Field(ge=0, le=24)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"zoom min {self.min} is greater than max {self.max}")
        return self


class DemoSpec(_Model):
    """How the demo-city generator fills the layer when no real dataset is given."""

    count: int = Field(ge=1)
    city_count: int | None = Field(default=None, ge=1)
    weight: Literal["population", "lowland", "roads", "centre", "uniform", "water"]


class TilesSpec(_Model):
    """Vector-tile options: low-zoom aggregation for dense point layers, merging of many small
    polygons at city zoom, a per-tile cap."""

    cluster: bool = False
    # Up to IOC_TILE_GENERALISE_MAX_ZOOM, polygons under IOC_TILE_MERGE_PX pixels are drawn
    # as the blocks of their 16-pixel cells (count, dominant style.by): buildings, parcels.
    merge: bool = False
    cluster_max_zoom: int | None = Field(default=None, ge=0, le=24)
    feature_cap: int | None = Field(default=None, ge=1)


class HistorySpec(_Model):
    """The layer keeps its past: every state of every row, with its validity interval, for
    ``retention_days`` after it was replaced (``ioc.db.history``)."""

    retention_days: int = Field(ge=1, le=3660)


# Properties of a history state (…/items/{id}/history): no attribute of a layer with history
# may take these names.
HISTORY_PROPERTIES = ("valid_from", "valid_to")


class LayerManifest(_Model):
    """Everything the server knows about one layer before its table exists."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")
    title: Localized
    description: Localized
    domain: str
    department: str
    keywords: list[str] = Field(default_factory=list)
    geometry: GeometrySpec
    access: Literal["public", "internal", "restricted"]
    cadence: Cadence
    source: SourceSpec
    id_attribute: str | None = None
    time_attribute: str | None = None
    zoom: ZoomRange
    attributes: list[AttributeSpec] = Field(min_length=1)
    style: StyleSpec
    # How the demo city fills the layer: every catalog manifest has one (load_manifest checks);
    # a layer a department creates from a file has none.
    demo: DemoSpec | None = None
    tiles: TilesSpec | None = None
    history: HistorySpec | None = None

    def attribute(self, name: str) -> AttributeSpec | None:
        """The attribute called ``name``, or None."""
        return next((a for a in self.attributes if a.name == name), None)

    @property
    def demo_spec(self) -> DemoSpec:
        """The demo spec of a catalog manifest (``load_manifest`` makes sure there is one)."""
        if self.demo is None:
            raise ManifestError(self.id, "has no demo spec: the demo city cannot fill it")
        return self.demo

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}")
        if self.department not in DEPARTMENTS:
            raise ValueError(f"unknown department {self.department!r}")
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise ValueError("attribute names are not unique")
        clash = [n for n in HISTORY_PROPERTIES if n in names]
        if self.history is not None and clash:
            raise ValueError(f"attribute {clash[0]!r} is reserved on a layer with history")
        refs = {"id_attribute": self.id_attribute, "time_attribute": self.time_attribute}
        refs.update(
            {"style.by": self.style.by},
            **{f"source.filter.{k}": k for k in self.source.filter or {}},
        )
        for where, name in refs.items():
            if name is not None and name not in names:
                raise ValueError(f"{where} names {name!r}, which is not an attribute")
        time_attr = self.attribute(self.time_attribute) if self.time_attribute else None
        if time_attr is not None and time_attr.type not in ("date", "timestamp"):
            raise ValueError(f"time_attribute {time_attr.name!r} must be a date or timestamp")
        by_attr = self.attribute(self.style.by) if self.style.by else None
        if by_attr is not None and by_attr.values is not None:
            for entry in self.style.legend:
                if entry.value is not None and entry.value not in by_attr.values:
                    raise ValueError(
                        f"legend value {entry.value!r} is not a value of {by_attr.name!r}"
                    )
        return self


def _describe(error: ValidationError) -> str:
    """The first validation problem as one sentence, with a count of the others."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def load_manifest(path: Path | str) -> LayerManifest:
    """Read and validate one manifest; its id must equal the file stem, its domain the folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(path, f"cannot be read as YAML ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise ManifestError(path, "is not a YAML mapping")
    try:
        manifest = LayerManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(path, _describe(exc)) from exc
    if manifest.id != path.stem:
        raise ManifestError(path, f"id {manifest.id!r} does not match the file name {path.stem!r}")
    if manifest.demo is None:
        raise ManifestError(path, "demo: a catalog manifest says how the demo city fills it")
    if manifest.domain != path.parent.name:
        raise ManifestError(
            path, f"domain {manifest.domain!r} does not match the folder {path.parent.name!r}"
        )
    return manifest


def load_catalog(root: Path | None = None) -> list[LayerManifest]:
    """All manifests under ``root`` (default: the bundled catalog), sorted by domain then id."""
    root = root or CATALOG_ROOT
    seen: dict[str, Path] = {}
    manifests: list[LayerManifest] = []
    for path in sorted(root.glob("*/*.yaml")):
        manifest = load_manifest(path)
        if manifest.id in seen:
            raise ManifestError(path, f"id {manifest.id!r} is already used by {seen[manifest.id]}")
        seen[manifest.id] = path
        manifests.append(manifest)
    return sorted(manifests, key=lambda m: (m.domain, m.id))
