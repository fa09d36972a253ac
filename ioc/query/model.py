"""The query document of ``POST /query`` and the limits that apply to it (``IOC_QUERY_*``).

A query names a source layer and narrows it: a CQL2 filter (``ioc.features.cql2``), a time range on the
layer's time attribute, spatial predicates against another layer, a GeoJSON geometry, a digital
address or a ward. It returns the features, or groups them (by ward, district, time bucket or
attribute) with aggregates. Everything a caller writes is checked here for shape (400 on any
malformed field) and later against the catalog (unknown or unreadable layers: 404; unknown
attributes: 400). Nothing in a document ever reaches SQL as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ioc.catalog.access import Principal
from ioc.errors import InvalidParameter, NotAuthenticated
from ioc.settings import PROJECT_ROOT

LAYER_ID = r"^[a-z][a-z0-9_]{1,62}$"
ALIAS = r"^[a-z][a-z0-9_]{0,62}$"
MAX_DISTANCE_M = 100_000.0  # absolute ceiling; IOC_QUERY_MAX_DISTANCE_M may lower it

LayerId = Annotated[str, Field(pattern=LAYER_ID, description="A layer id of the catalog.")]
AttributeName = Annotated[
    str,
    Field(
        min_length=1, max_length=63, description="An attribute of the layer (see its queryables)."
    ),
]
Metres = Annotated[float, Field(strict=True, gt=0, le=MAX_DISTANCE_M, allow_inf_nan=False)]
Filter = str | dict[str, Any]
FilterLang = Literal["cql2-text", "cql2-json"]
Operation = Literal["intersects", "within", "contains", "dwithin", "nearest"]
Bucket = Literal["hour", "day", "week", "month", "year"]
AggregateOp = Literal["count", "sum", "avg", "min", "max", "area", "length", "count_distinct"]
OutputFormat = Literal["geojson", "csv", "gpkg"]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SpatialPredicate(_Doc):
    """The source feature stands in relation ``op`` to a target: another layer's features
    (any of them), a GeoJSON geometry (CRS84), a digital address's point or a ward's area.

    ``within``: the source feature lies within the target; ``contains``: it contains the
    target; ``dwithin``: it is at most ``distance`` metres away (on the WGS 84 ellipsoid);
    ``nearest``: it is one of the ``k`` features nearest to the target (to each target feature
    when the target is a layer)."""

    op: Operation
    layer: LayerId | None = None
    filter: Filter | None = Field(default=None, description="CQL2 filter on the target layer.")
    filter_lang: FilterLang | None = None
    geometry: dict[str, Any] | None = Field(
        default=None, description="A GeoJSON geometry, lon/lat (CRS84)."
    )
    address: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Za-z]{4,20}$",
        description="A digital address code (layer digital_addresses).",
    )
    ward: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,8}$",
        description="A ward code: 2025 wards, or wards_2019 with ward_edition '2019'.",
    )
    ward_edition: Literal["current", "2019"] = "current"
    distance: Metres | None = Field(default=None, description="Metres (dwithin).")
    k: int | None = Field(
        default=None, strict=True, ge=1, le=1000, description="How many nearest features (nearest)."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        targets = [
            name
            for name in ("layer", "geometry", "address", "ward")
            if getattr(self, name) is not None
        ]
        if len(targets) != 1:
            raise ValueError("give exactly one target: layer, geometry, address or ward")
        if (self.op == "dwithin") != (self.distance is not None):
            raise ValueError("'distance' goes with op 'dwithin', and only with it")
        if (self.op == "nearest") != (self.k is not None):
            raise ValueError("'k' goes with op 'nearest', and only with it")
        if self.filter is not None and self.layer is None:
            raise ValueError("'filter' applies to a target layer only")
        return self

    @property
    def target(self) -> str:
        return next(
            n for n in ("layer", "geometry", "address", "ward") if getattr(self, n) is not None
        )


class GroupKey(_Doc):
    """One grouping: by ward (2025 or pre-2025), district (2019 or 2021–2025 boundaries), time
    bucket of the layer's time attribute (city time, UTC+7) or attribute value."""

    ward: Literal["current", "2019"] | None = None
    district: Literal["2019", "2024"] | None = None
    time: Bucket | None = None
    attribute: AttributeName | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if sum(v is not None for v in (self.ward, self.district, self.time, self.attribute)) != 1:
            raise ValueError("a group key is exactly one of ward, district, time or attribute")
        return self


class Aggregate(_Doc):
    """An aggregate of each group. ``area`` (m², polygon layers) and ``length`` (m, line
    layers) are measured on the ellipsoid, and clipped to the unit when grouping by unit."""

    op: AggregateOp
    attribute: AttributeName | None = None
    as_: str | None = Field(
        default=None, alias="as", pattern=ALIAS, description="Name of the result column."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        needs = self.op in ("sum", "avg", "min", "max", "count_distinct")
        if needs and self.attribute is None:
            raise ValueError(f"'{self.op}' needs an attribute")
        if self.op in ("area", "length") and self.attribute is not None:
            raise ValueError(f"'{self.op}' measures the geometry and takes no attribute")
        return self


class OrderKey(_Doc):
    """A sort key: an attribute (or ``distance_m``) for features, a result column for groups."""

    key: AttributeName
    desc: bool = Field(default=False, strict=True)


QUERY_EXAMPLES: dict[str, dict[str, Any]] = {
    "schools_near_floods": {
        "summary": "Trường học cách điểm ngập ≤ 500 m / Schools within 500 m of a flood point",
        "value": {
            "source": "schools",
            "spatial": [{"op": "dwithin", "distance": 500, "layer": "flood_points"}],
            "properties": ["name", "poi_type"],
            "format": "geojson",
        },
    },
    "reports_by_ward": {
        "summary": "Phản ánh 1022 trong tháng theo phường / 1022 reports this month by ward",
        "value": {
            "source": "reports_1022",
            "from": "2025-07-01",
            "to": "2025-08-01",
            "filter": "category = 'ngập nước'",
            "group_by": [{"ward": "current"}],
            "aggregates": [{"op": "count"}],
            "order_by": [{"key": "count", "desc": True}],
            "limit": 20,
        },
    },
    "permits_in_corridor": {
        "summary": "Giấy phép trong hành lang đường quy hoạch / Permits in a planned road corridor",
        "value": {
            "source": "construction_permits",
            "spatial": [
                {
                    "op": "dwithin",
                    "distance": 30,
                    "layer": "planned_roads",
                    "filter": "status <> 'hoàn thành'",
                }
            ],
            "format": "csv",
        },
    },
    "nearest_hospitals": {
        "summary": "3 bệnh viện gần một địa chỉ số / The 3 hospitals nearest a digital address",
        "value": {
            "source": "hospitals",
            "spatial": [{"op": "nearest", "k": 3, "address": "2022684788"}],
            "order_by": [{"key": "distance_m"}],
        },
    },
    "monthly_floods": {
        "summary": "Điểm ngập theo tháng và nguyên nhân / Flood points by month and cause",
        "value": {
            "source": "flood_points",
            "group_by": [{"time": "month"}, {"attribute": "cause"}],
            "aggregates": [{"op": "count"}, {"op": "avg", "attribute": "depth_cm"}],
        },
    },
}


class QueryDoc(_Doc):
    """A declarative spatial query over the catalog."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"examples": [example["value"] for example in QUERY_EXAMPLES.values()]},
    )

    source: LayerId
    filter: Filter | None = Field(default=None, description="CQL2 text, or a CQL2 JSON object.")
    filter_lang: FilterLang | None = Field(
        default=None, description="Default: cql2-json for an object, cql2-text for a string."
    )
    # A date parses as midnight; a time without offset is city time (UTC+7).
    from_: datetime | None = Field(
        default=None,
        alias="from",
        description=(
            "Start (inclusive) on the layer's time attribute; a date or a time without offset is "
            "city time (UTC+7)."
        ),
    )
    to: datetime | None = Field(default=None, description="End (exclusive).")
    spatial: list[SpatialPredicate] = Field(default_factory=list, max_length=5)
    group_by: list[GroupKey] = Field(default_factory=list, max_length=3)
    aggregates: list[Aggregate] = Field(default_factory=list, max_length=12)
    properties: list[AttributeName] | None = Field(
        default=None,
        max_length=200,
        description=("Attributes returned with features (default: all)."),
    )
    order_by: list[OrderKey] = Field(default_factory=list, max_length=5)
    limit: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        description=("Rows returned; at most the caller's row cap (the default)."),
    )
    offset: int = Field(default=0, strict=True, ge=0, le=10_000_000)
    format: OutputFormat = "geojson"
    geometry: bool = Field(default=True, strict=True, description="Return geometries.")
    simplify: float | None = Field(
        default=None,
        ge=0,
        le=0.01,
        allow_inf_nan=False,
        description="Simplify group (ward/district) geometries by this many degrees.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        units = [g for g in self.group_by if g.ward or g.district]
        if len(units) > 1:
            raise ValueError("group by at most one kind of administrative unit")
        if self.group_by and self.properties is not None:
            raise ValueError("'properties' select feature attributes: not with group_by")
        if sum(p.op == "nearest" for p in self.spatial) > 1:
            raise ValueError("at most one 'nearest' predicate")
        if self.filter_lang == "cql2-text" and isinstance(self.filter, dict):
            raise ValueError("a cql2-text filter is a string")
        return self

    @property
    def grouped(self) -> bool:
        return bool(self.group_by or self.aggregates)


def _location(error: Mapping[str, Any]) -> str:
    return ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "query"


def parse_query(data: Any) -> QueryDoc:
    """A query document from JSON data; InvalidParameter naming the first bad field."""
    try:
        return QueryDoc.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _location(first)
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise InvalidParameter(f"Invalid query at '{where}': {message}.", parameter=where) from None


# --- limits -----------------------------------------------------------------------------------


class QuerySettings(BaseSettings):
    """Limits of the query service, per role (``IOC_QUERY_*``)."""

    model_config = SettingsConfigDict(env_prefix="IOC_QUERY_", env_file=".env", extra="ignore")

    anonymous: bool = Field(
        default=True,
        description=(
            "Anonymous callers may query public layers (with the tight limits below); false: 401."
        ),
    )
    timeout_anonymous_s: float = Field(default=5, gt=0, le=3600)
    timeout_operator_s: float = Field(default=20, gt=0, le=3600)
    timeout_analyst_s: float = Field(default=60, gt=0, le=3600)
    timeout_publisher_s: float = Field(default=60, gt=0, le=3600)
    timeout_admin_s: float = Field(default=120, gt=0, le=3600)
    timeout_job_s: float = Field(
        default=900,
        gt=0,
        le=86_400,
        description="Statement timeout of jobs and saved-query refreshes.",
    )
    rows_anonymous: int = Field(default=1_000, ge=1)
    rows_operator: int = Field(default=10_000, ge=1)
    rows_analyst: int = Field(default=100_000, ge=1)
    rows_publisher: int = Field(default=100_000, ge=1)
    rows_admin: int = Field(default=500_000, ge=1)
    rows_job: int = Field(default=2_000_000, ge=1, description="Row cap of jobs and saved queries.")
    max_distance_m: float = Field(default=50_000, gt=0, le=MAX_DISTANCE_M)
    max_k: int = Field(default=100, ge=1, le=1000)
    max_vertices: int = Field(default=20_000, ge=4, description="Vertices of a query geometry.")
    job_dir: Path = Field(
        default=PROJECT_ROOT / "var" / "query-jobs",
        description="Where job results are written (shared by the workers).",
    )
    job_keep_hours: float = Field(default=24, gt=0, description="Job results are kept this long.")
    job_concurrency: int = Field(
        default=2, ge=1, le=32, description="Jobs run at once per process."
    )
    jobs_per_owner: int = Field(default=5, ge=1, description="Queued or running jobs per key.")
    poll_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How often the runner looks for work."
    )
    saved_min_every_s: int = Field(
        default=300, ge=60, description="Shortest refresh interval of a saved query."
    )
    membership_min_features: int = Field(
        default=50_000,
        ge=0,
        description=(
            "Layers with at least this many features get a cached ward/district membership."
        ),
    )
    membership_max_age_s: int = Field(
        default=3600,
        ge=60,
        description=(
            "A cached membership is rebuilt at least this often (edits that bypass publishing)."
        ),
    )
    membership_timeout_s: float = Field(default=1800, gt=0)


def limits_for(
    settings: QuerySettings, principal: Principal, *, job: bool = False
) -> tuple[int, int]:
    """(statement timeout in ms, row cap) of a principal; jobs get the job limits."""
    if job:
        return int(settings.timeout_job_s * 1000), settings.rows_job
    if not principal.authenticated and not settings.anonymous:
        raise NotAuthenticated("Queries need an API key: send 'Authorization: Bearer KEY'.")
    role = principal.role
    return (
        int(getattr(settings, f"timeout_{role}_s") * 1000),
        int(getattr(settings, f"rows_{role}")),
    )
