"""Digital addresses: the registry ``ioc.addresses`` as a model — its settings, errors, input
validation, who may read it, and how a row becomes a GeoJSON feature.

Vietnam's national digital-address platform gives every address a code tied to a point and a
ward. The registry keeps one row per code with both wards (since 1 July 2025 and before the
2025 reorganisation), is filled from the demo city's ``digital_addresses`` layer or from an export
of the national platform (``ioc.addresses.imports``), and is the only table searched. Building it
(psycopg2: commands, seeding) is ``ioc.addresses.index``; reading it (asyncpg: the API) is
``ioc.addresses.lookup``. See docs/addresses.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ioc.catalog.access import ADMIN, Principal, can_read
from ioc.catalog.layers import Catalog, Layer
from ioc.errors import FeatureNotFound, InvalidParameter, LayerNotFound
from ioc.media import GEOJSON

CITY_VI = "Thành phố Hồ Chí Minh"
META_KEY = "addresses"
LAYER_SOURCE_PREFIX = "layer:"
# Layers the registry and the ward names come from (catalog ids).
WARDS_LAYER = "wards"
WARDS_2019_LAYER = "wards_2019"
# A generous box around the merged city (incl. Côn Đảo), used only when no ward layer exists.
CITY_BBOX = (106.0, 8.5, 107.7, 11.6)


class AddressSettings(BaseSettings):
    """Digital addresses (``IOC_ADDRESS_*``)."""

    model_config = SettingsConfigDict(env_prefix="IOC_ADDRESS_", env_file=".env", extra="ignore")

    # Applied by Python (API, imports) and by PostgreSQL (loading the layer): keep to the
    # syntax both share (classes such as \d, anchors, counts).
    code_pattern: str = Field(
        default=r"^\d{10}$", description="Regular expression a digital address code must match."
    )
    layer_id: str = Field(
        default="digital_addresses",
        description="Catalog layer the demo city's addresses are read from.",
    )
    link_distance_m: float = Field(
        default=50.0,
        gt=0,
        le=1000,
        description="Features further than this from every address stay unlinked.",
    )
    reverse_radius_m: float = Field(
        default=1000.0,
        gt=0,
        le=50_000,
        description="Reverse geocoding looks this far for an address.",
    )
    geocode_max_rows: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Largest CSV accepted by batch geocoding."
    )

    @field_validator("code_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(
                f"IOC_ADDRESS_CODE_PATTERN is not a regular expression: {exc}"
            ) from exc
        return value


# --- errors (subclasses map to HTTP statuses through their base in api/errors.py) -----------


class AddressNotFound(FeatureNotFound):
    """No address has this code (or none is near enough)."""


class OutsideCity(InvalidParameter):
    """A position outside Ho Chi Minh City."""


class TooManyRows(InvalidParameter):
    """A batch is larger than the configured limit."""


# --- validation ----------------------------------------------------------------------------


def validate_code(code: str, pattern: str, parameter: str = "code") -> str:
    """The code stripped, or InvalidParameter when it does not match the configured pattern."""
    code = (code or "").strip()
    if not code:
        raise InvalidParameter(
            "Thiếu mã địa chỉ số / the digital address code is empty.", parameter=parameter
        )
    if not re.search(pattern, code):
        raise InvalidParameter(
            f"Mã địa chỉ số '{code[:40]}' không hợp lệ / '{code[:40]}' is not a valid digital "
            f"address code (expected pattern {pattern}).",
            parameter=parameter,
        )
    return code


def parse_point(text: str, parameter: str) -> tuple[float, float]:
    """'lon,lat' as two floats in WGS 84 range, or InvalidParameter."""
    parts = [p.strip() for p in (text or "").split(",")]
    try:
        lon, lat = (float(p) for p in parts)
    except ValueError:
        raise InvalidParameter(
            f"'{parameter}' phải có dạng lon,lat / must be 'lon,lat' in WGS 84 degrees.",
            parameter=parameter,
        ) from None
    check_lonlat(lon, lat, parameter)
    return lon, lat


def parse_bbox(text: str, parameter: str = "bbox") -> tuple[float, float, float, float]:
    """'minlon,minlat,maxlon,maxlat' in WGS 84, or InvalidParameter."""
    try:
        x0, y0, x1, y1 = (float(p) for p in (text or "").split(","))
    except ValueError:
        raise InvalidParameter(
            "bbox phải có dạng minLon,minLat,maxLon,maxLat / bbox must be "
            "'minLon,minLat,maxLon,maxLat'.",
            parameter=parameter,
        ) from None
    check_lonlat(x0, y0, parameter)
    check_lonlat(x1, y1, parameter)
    if x0 > x1 or y0 > y1:
        raise InvalidParameter("bbox: min must not exceed max.", parameter=parameter)
    return x0, y0, x1, y1


def check_lonlat(lon: float, lat: float, parameter: str = "lon,lat") -> None:
    """InvalidParameter unless lon/lat are finite WGS 84 degrees."""
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidParameter(
            f"Toạ độ ({lon}, {lat}) không hợp lệ / ({lon}, {lat}) is not a WGS 84 lon/lat.",
            parameter=parameter,
        )


def _outside(lon: float, lat: float, parameter: str) -> OutsideCity:
    return OutsideCity(
        f"Vị trí ({lon:.6f}, {lat:.6f}) nằm ngoài TP. Hồ Chí Minh / the position is outside "
        "Ho Chi Minh City.",
        parameter=parameter,
    )


def _layer(catalog: Catalog, layer_id: str) -> Layer | None:
    """A layer by id whatever the caller (system use: checks and joins, never returned data)."""
    try:
        return catalog.get(layer_id, ADMIN)
    except LayerNotFound:
        return None


def _point_sql(layer: Layer, lon: str, lat: str) -> str:
    """The WGS 84 point given by two SQL expressions, in the layer's SRID."""
    point = f"ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)"
    return point if layer.srid == 4326 else f"ST_Transform({point}, {int(layer.srid)})"


def address_guard(catalog: Catalog, settings: AddressSettings) -> Any:
    """What decides who reads the registry: the address layer of the catalog, public without one."""
    layer = _layer(catalog, settings.layer_id)
    return layer if layer is not None else _PublicRegistry()


@dataclass(frozen=True)
class _PublicRegistry:
    access: str = "public"
    department: str = "science_tech"


def require_registry(catalog: Catalog, principal: Principal, settings: AddressSettings) -> None:
    """LayerNotFound when the caller may not read the address layer (the same as a missing one)."""
    if not can_read(principal, address_guard(catalog, settings)):
        raise LayerNotFound(
            f"Không có lớp '{settings.layer_id}' / there is no layer '{settings.layer_id}'."
        )


# --- formatting ----------------------------------------------------------------------------

# Columns every read query selects (``a`` = ioc.addresses, ``wn``/``wo`` = ward names).
ADDRESS_COLUMNS = """a.code, a.house_number, a.street, a.ward_code, a.ward_code_2019, a.building_id,
    a.parcel_id, a.source, a.valid_from, a.valid_to, a.house_key, ST_X(a.geom) AS lon,
    ST_Y(a.geom) AS lat, wn.label AS ward_label, wn.name AS ward_name, wo.label AS ward_2019_label,
    wo.name AS ward_2019_name, wo.district AS ward_2019_district"""
ADDRESS_JOINS = """LEFT JOIN ioc.address_names wn ON wn.kind = 'ward' AND wn.key = a.ward_code
    LEFT JOIN ioc.address_names wo ON wo.kind = 'ward_2019' AND wo.key = a.ward_code_2019"""


def _jsonable(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def full_address(house: str | None, street: str | None, *units: str | None) -> str:
    """'12 Lê Lợi, Phường Bến Thành, Thành phố Hồ Chí Minh' (Vietnamese order: small to large)."""
    first = " ".join(p for p in (house, street) if p)
    return ", ".join(p for p in (first, *units, CITY_VI) if p)


def address_properties(row: Any) -> dict[str, Any]:
    """Properties of one address row (selected with ADDRESS_COLUMNS)."""
    ward = row["ward_label"] or row["ward_code"]
    ward_2019 = row["ward_2019_label"] or row["ward_code_2019"]
    return {
        "code": row["code"],
        "house_number": row["house_number"],
        "street": row["street"],
        "address": full_address(row["house_number"], row["street"], ward),
        "address_before_2025": full_address(
            row["house_number"], row["street"], ward_2019, row["ward_2019_district"]
        )
        if row["ward_code_2019"]
        else None,
        "ward": {
            "code": row["ward_code"],
            "name": row["ward_name"],
            "full_name": row["ward_label"],
        },
        "ward_2019": {
            "code": row["ward_code_2019"],
            "name": row["ward_2019_name"],
            "full_name": row["ward_2019_label"],
            "district": row["ward_2019_district"],
        }
        if row["ward_code_2019"]
        else None,
        "building_id": row["building_id"],
        "parcel_id": row["parcel_id"],
        "source": row["source"],
        "valid_from": _jsonable(row["valid_from"]),
        "valid_to": _jsonable(row["valid_to"]),
    }


def address_feature(row: Any, base_url: str = "", **extra: Any) -> dict[str, Any]:
    """A GeoJSON Feature for an address, with links to its features and what is here."""
    props = address_properties(row) | extra
    code = row["code"]
    return {
        "type": "Feature",
        "id": code,
        "geometry": {"type": "Point", "coordinates": [round(row["lon"], 7), round(row["lat"], 7)]},
        "properties": props,
        "links": [
            {"rel": "self", "type": GEOJSON, "href": f"{base_url}/addresses/{code}"},
            {
                "rel": "related",
                "type": GEOJSON,
                "title": "Linked features",
                "href": f"{base_url}/addresses/{code}/features",
            },
            {
                "rel": "describedby",
                "type": "application/json",
                "title": "What is here",
                "href": f"{base_url}/whats-here?address={code}",
            },
        ],
    }
