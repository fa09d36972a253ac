"""What a file holds, read before it becomes a layer: geometry type, CRS (VN-2000 forms
included), attributes and their types, extent, feature count, and the layer defaults that
follow from them (style from the geometry type, zooms from the features' size).

A department creating a layer confirms only a title, the domain, the access level and which
attributes are the id and the time (``build_manifest``); everything else comes from here.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import shapely
from pydantic import ValidationError
from pyproj import CRS, Transformer

from ioc.addresses.normalise import fold
from ioc.catalog.layers import Layer, layer_from_row
from ioc.errors import InvalidParameter, UploadTooLarge
from layers import ingest
from layers.crs_detect import resolve_srid
from layers.manifest import DEPARTMENTS, DOMAINS, RESERVED_ATTRIBUTES, LayerManifest
from layers.registry import manifest_row

# Fields GIS tools add on their own: never attributes of the layer.
_TOOL_FIELDS = RESERVED_ATTRIBUTES | {"ogc_fid", "objectid", "shape_leng", "shape_area", "gid"}
_INTEGER = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_NUMBER = re.compile(r"-?[0-9]+([.,][0-9]+)?([eE][-+]?[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}")
_DISTINCT_CAP = 1_000_000  # values remembered per column to tell an id candidate
_SIZE_SAMPLES = 20_000
# Metres per pixel of a 256-pixel web-mercator tile at zoom 0, at the city's latitude (10.8°).
_M_PER_PX_Z0 = 156_543.03 * math.cos(math.radians(10.8))
# Colours by geometry kind (ColorBrewer Set1): a new layer is readable before anyone styles it.
_STYLES: dict[str, dict[str, Any]] = {
    "Point": {"color": "#e41a1c", "radius": 5},
    "LineString": {"color": "#377eb8", "width": 2},
    "Polygon": {"color": "#4daf4a", "fill": "#4daf4a", "opacity": 0.35},
}


def attribute_name(field_name: str) -> str:
    """The attribute a file's field becomes: folded to lower-case ASCII words joined by '_'
    ('Tên đường' → 'ten_duong'), starting with a letter, at most 63 characters."""
    name = re.sub(r"[^a-z0-9]+", "_", fold(field_name)).strip("_")
    if not name or not name[0].isalpha():
        name = f"f_{name}".rstrip("_")
    return name[:63]


def _kind_of(value: Any) -> str | None:
    """The attribute type one value suggests, None for an empty value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return None if math.isnan(value) else "number"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, date):
        return "date"
    if not isinstance(value, str):
        return "text"
    text = value.strip()
    # '007' is a code, not the number 7: leading zeros keep a column text.
    if _INTEGER.fullmatch(text):
        return "integer"
    if _NUMBER.fullmatch(text) and "," not in text:
        return "number"
    if _DATE.fullmatch(text):
        return "date" if _parses(date.fromisoformat, text) else "text"
    if _TIMESTAMP.match(text):
        return "timestamp" if _parses(datetime.fromisoformat, text) else "text"
    return "boolean" if text.lower() in ("true", "false") else "text"


def _parses(parse: Callable[[str], Any], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def _merge(kinds: set[str]) -> str:
    if len(kinds) <= 1:
        return next(iter(kinds), "text")
    if kinds == {"integer", "number"}:
        return "number"
    if kinds == {"date", "timestamp"}:
        return "timestamp"
    return "text"


@dataclass
class _Column:
    """What one field's values say about it, accumulated row by row."""

    source: str
    name: str
    kinds: set[str] = field(default_factory=set)
    filled: int = 0
    distinct: set[Any] | None = field(default_factory=set)

    def add(self, value: Any) -> None:
        kind = _kind_of(value)
        if kind is None:
            return
        self.kinds.add(kind)
        self.filled += 1
        if self.distinct is not None and kind in ("integer", "text"):
            key = str(value).strip()
            if key in self.distinct or len(self.distinct) >= _DISTINCT_CAP:
                self.distinct = None  # a repeat: not an id
            else:
                self.distinct.add(key)
        elif kind not in ("integer", "text"):
            self.distinct = None


@dataclass
class InferredAttribute:
    """One attribute as read from the file."""

    name: str
    field: str
    type: str
    filled: int
    unique: bool


@dataclass
class Inference:
    """What a file holds and the layer defaults it suggests (the API's ``inference``)."""

    format: str
    source_srid: int
    crs_name: str
    layer_srid: int
    geometry_type: str
    count: int
    extent: list[float] | None
    attributes: list[InferredAttribute]
    id_candidates: list[str]
    time_candidates: list[str]
    zoom: dict[str, int]
    style: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_BASE = {0: "Point", 1: "LineString", 3: "Polygon", 4: "Point", 5: "LineString", 6: "Polygon"}


def infer_source(
    source: ingest.Source,
    *,
    crs: str | None = None,
    limits: ingest.IngestLimits | None = None,
    progress: Callable[[int], None] | None = None,
) -> Inference:
    """Read every row of an opened upload once (in batches) and describe it."""
    limits = limits or ingest.IngestLimits()
    srid = resolve_srid(source.crs, explicit=crs)
    columns: dict[str, _Column] = {}
    for name in source.fields:
        attr = attribute_name(name)
        if attr not in _TOOL_FIELDS and attr not in {c.name for c in columns.values()}:
            columns[name] = _Column(name, attr)
    bases: dict[str, int] = {}
    multi, count, sizes = False, 0, list[float]()
    bounds = [math.inf, math.inf, -math.inf, -math.inf]
    for batch in ingest.iter_rows(source):
        count += len(batch)
        if count > limits.max_features:
            raise UploadTooLarge(
                f"The upload has more than {limits.max_features:,} features.", parameter="file"
            )
        for row in batch:
            for column in columns.values():
                column.add(row.get(column.source))
        geoms = shapely.from_wkb([r.get("__wkb__") for r in batch], on_invalid="ignore")
        geoms = geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
        for type_id in shapely.get_type_id(geoms):
            base = _BASE.get(int(type_id), "Geometry")
            bases[base] = bases.get(base, 0) + 1
            multi = multi or int(type_id) in (4, 5, 6)
        if len(geoms):
            box = shapely.bounds(geoms)
            bounds = [
                min(bounds[0], box[:, 0].min()),
                min(bounds[1], box[:, 1].min()),
                max(bounds[2], box[:, 2].max()),
                max(bounds[3], box[:, 3].max()),
            ]
            if len(sizes) < _SIZE_SAMPLES:
                diagonal = ((box[:, 2] - box[:, 0]) ** 2 + (box[:, 3] - box[:, 1]) ** 2) ** 0.5
                sizes.extend(float(d) for d in diagonal[: _SIZE_SAMPLES - len(sizes)])
        if progress:
            progress(count)
    if not bases:
        raise InvalidParameter("The file holds no feature with a geometry.", parameter="file")
    return _describe(source, srid, columns, bases, multi, count, bounds, sizes)


def _describe(
    source: ingest.Source,
    srid: int,
    columns: dict[str, _Column],
    bases: dict[str, int],
    multi: bool,
    count: int,
    bounds: list[float],
    sizes: list[float],
) -> Inference:
    notes = []
    base = max(bases, key=lambda b: bases[b])
    if base == "Geometry":
        raise InvalidParameter(
            "The file's geometries are collections or curves: a layer holds points, lines or"
            " polygons.",
            parameter="file",
        )
    if len(bases) > 1:
        others = ", ".join(f"{n:,} {b}" for b, n in bases.items() if b != base)
        notes.append(
            f"The layer takes the most common geometry, {base}; {others} will be rejected."
        )
    crs = CRS.from_epsg(srid)
    west, south, east, north = bounds
    to_wgs84 = Transformer.from_crs(crs, 4326, always_xy=True)
    extent = list(to_wgs84.transform_bounds(west, south, east, north))
    metres = 111_320.0 if crs.is_geographic else 1.0
    median = statistics.median(sizes) * metres if sizes else 0.0
    attributes = [
        InferredAttribute(
            name=c.name,
            field=c.source,
            type=_merge(c.kinds),
            filled=c.filled,
            unique=c.distinct is not None and c.filled == count,
        )
        for c in columns.values()
    ]
    return Inference(
        format=source.format,
        source_srid=srid,
        crs_name=crs.name,
        # The city's survey CRS is kept as it came (exact to the millimetre); others go to WGS 84.
        layer_srid=9210 if srid == 9210 else 4326,
        geometry_type=("Multi" + base) if multi else base,
        count=count,
        extent=[round(v, 7) for v in extent],
        attributes=attributes,
        id_candidates=[a.name for a in attributes if a.unique],
        time_candidates=[a.name for a in attributes if a.type in ("date", "timestamp")],
        zoom={"min": _min_zoom(base, median, count), "max": 22},
        style=_STYLES[base],
        notes=notes,
    )


def _min_zoom(base: str, median_m: float, count: int) -> int:
    """The first zoom at which the layer is worth drawing: a typical line or polygon spans
    two pixels; points by how many there are."""
    if base == "Point" or median_m <= 0:
        return 8 if count <= 1_000 else 10 if count <= 20_000 else 12
    return max(0, min(14, math.ceil(math.log2(2 * _M_PER_PX_Z0 / median_m))))


def infer_file(
    path: Path,
    filename: str,
    *,
    fmt: str | None = None,
    crs: str | None = None,
    limits: ingest.IngestLimits | None = None,
) -> Inference:
    """Open an upload (with every check of ``layers.upload_check``) and describe it."""
    source = ingest.open_source(path, filename, fmt=fmt, limits=limits)
    try:
        return infer_source(source, crs=crs, limits=limits)
    finally:
        source.close()


# --- the manifest of a new layer ------------------------------------------------------------


@dataclass
class NewLayerFields:
    """What a person confirms to create a layer from a file (everything else is inferred)."""

    title_vi: str | None = None
    title_en: str | None = None
    domain: str | None = None
    access: str | None = None  # internal when not said
    id_attribute: str | None = None
    time_attribute: str | None = None
    layer_id: str | None = None
    department: str | None = None


def layer_id_from(title: str) -> str:
    """A layer id from a title ('Trạm xe buýt (2024)' → 'tram_xe_buyt_2024')."""
    name = attribute_name(title)
    return name if len(name) > 1 else f"{name}_layer"


def build_manifest(inference: Inference, fields: NewLayerFields, *, filename: str) -> LayerManifest:
    """The manifest of a new layer: the confirmed fields over the inferred defaults.
    InvalidParameter, one sentence naming the field, when a field is missing or wrong."""
    stem = Path(filename).stem or "layer"
    title_vi = (fields.title_vi or "").strip() or stem
    title_en = (fields.title_en or "").strip() or title_vi
    _choose(fields.domain, DOMAINS, "domain")
    _choose(fields.department, DEPARTMENTS, "department")
    names = {a.name for a in inference.attributes}
    for which in ("id_attribute", "time_attribute"):
        value = getattr(fields, which)
        if value and value not in names:
            raise InvalidParameter(
                f"'{which}' names '{value[:40]}', which is not an attribute of the file"
                f" (it has: {', '.join(sorted(names)[:12]) or 'none'}).",
                parameter=which,
            )
    kind = inference.geometry_type.removeprefix("Multi")
    document = {
        "id": fields.layer_id or layer_id_from(title_en),
        "title": {"vi": title_vi, "en": title_en},
        "description": {
            "vi": f"Lớp tạo từ tệp {filename[:80]}.",
            "en": f"Layer created from the file {filename[:80]}.",
        },
        "domain": fields.domain,
        "department": fields.department,
        "geometry": {"type": inference.geometry_type, "srid": inference.layer_srid},
        "access": fields.access or "internal",
        "cadence": "static",
        "source": {"name": DEPARTMENTS[fields.department or ""]["vi"], "licence": "not stated"},
        "id_attribute": fields.id_attribute or None,
        "time_attribute": fields.time_attribute or None,
        "zoom": inference.zoom,
        "attributes": [
            {"name": a.name, "type": a.type, "label": {"vi": a.field, "en": a.field}}
            for a in inference.attributes
        ]
        or [{"name": "name", "type": "text", "label": {"vi": "Tên", "en": "Name"}}],
        "style": {
            **_STYLES[kind],
            "legend": [
                {"label": {"vi": title_vi, "en": title_en}, "color": _STYLES[kind]["color"]}
            ],
        },
    }
    try:
        return LayerManifest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidParameter(f"The new layer's {where} is not valid: {message}.") from exc


def _choose(value: str | None, allowed: dict[str, Any], name: str) -> None:
    if not value or value not in allowed:
        raise InvalidParameter(
            f"'{name}' must be one of {', '.join(allowed)}"
            + (f", not '{value[:40]}'." if value else "."),
            parameter=name,
        )


def virtual_layer(manifest: LayerManifest) -> Layer:
    """The Layer a manifest will be once created (for validating an upload against it before
    the registry row and the table exist)."""
    row = manifest_row(manifest, "published")
    return layer_from_row(
        {
            **row,
            "metadata": {},
            "feature_count": 0,
            "extent": None,
            "version": 0,
            "last_update": None,
        }
    )
