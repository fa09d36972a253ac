"""Bound parameters and typed columns for the feature queries.

Every user value becomes ``$n`` with an explicit cast chosen from the catalog's attribute type,
so PostgreSQL never guesses and asyncpg encodes a value of the right Python type. Identifiers
come from the catalog only and are quoted by :func:`ioc.db.identifiers.quote_ident`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from ioc.catalog.layers import Attribute, Layer
from ioc.db.identifiers import quote_ident
from ioc.errors import InvalidParameter

ALIAS = "t"  # the layer table's alias in every feature query

# Catalog attribute type → the SQL type of its bound values.
CASTS = {
    "integer": "bigint",
    "number": "double precision",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamptz",
    "text": "text",
}


class Binds:
    """Collects values and hands out ``$n`` placeholders (asyncpg numbering)."""

    def __init__(self, start: int = 0) -> None:
        self.values: list[Any] = []
        self._start = start

    def add(self, value: Any, cast: str | None = None) -> str:
        """Bind one value; returns its placeholder, cast when ``cast`` is given."""
        self.values.append(value)
        placeholder = f"${self._start + len(self.values)}"
        return f"{placeholder}::{cast}" if cast else placeholder


def column(layer: Layer, name: str) -> str:
    """The quoted column of a layer attribute (the caller has checked it is one)."""
    return f"{ALIAS}.{quote_ident(name)}"


def attribute_or_400(layer: Layer, name: str, parameter: str) -> Attribute:
    """The catalog attribute ``name``; 400 naming the parameter when it is unknown."""
    attribute = layer.attribute(name)
    if attribute is None:
        known = ", ".join(a.name for a in layer.attributes) or "none"
        raise InvalidParameter(
            f"Unknown property '{name}' in '{parameter}' for collection '{layer.id}' "
            f"(queryables: {known}).",
            parameter=parameter,
        )
    return attribute


def typed_column(layer: Layer, attribute: Attribute) -> str:
    """The column as SQL of its catalog type: text attributes are read ``::text`` so that a
    registered table's uuid or varchar column compares with a text value."""
    sql = column(layer, attribute.name)
    return f"{sql}::text" if attribute.type not in CASTS or attribute.type == "text" else sql


def _as_datetime(value: Any, parameter: str) -> datetime | date:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return _as_datetime(datetime.fromisoformat(value.replace("Z", "+00:00")), parameter)
        except ValueError:
            pass
    raise InvalidParameter(
        f"'{value}' is not a date or timestamp (RFC 3339) in '{parameter}'.", parameter=parameter
    )


def coerce(value: Any, attribute_type: str, parameter: str) -> tuple[Any, str]:
    """A user value as (Python value, SQL cast) for an attribute type; 400 on a mismatch."""
    if value is None:
        return None, CASTS.get(attribute_type, "text")
    if attribute_type in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidParameter(
                f"'{value}' is not a number in '{parameter}'.", parameter=parameter
            )
        if isinstance(value, int) and attribute_type == "integer" and abs(value) < 2**63:
            return value, "bigint"
        if isinstance(value, float) and value != value:  # NaN matches nothing usefully
            raise InvalidParameter(f"NaN is not allowed in '{parameter}'.", parameter=parameter)
        return float(value), "double precision"
    if attribute_type == "boolean":
        if not isinstance(value, bool):
            raise InvalidParameter(
                f"'{value}' is not a boolean in '{parameter}'.", parameter=parameter
            )
        return value, "boolean"
    if attribute_type in ("date", "timestamp"):
        moment = _as_datetime(value, parameter)
        if isinstance(moment, datetime):
            return moment, "timestamptz"
        if attribute_type == "timestamp":  # a DATE against a timestamp: midnight UTC
            return datetime.combine(moment, time(), tzinfo=UTC), "timestamptz"
        return moment, "date"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidParameter(
            f"'{value}' is not a text value in '{parameter}'.", parameter=parameter
        )
    return str(value), "text"
