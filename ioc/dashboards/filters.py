"""What a dashboard is narrowed to: the filter bar, the time range and the unit level.

The same state travels in the page's URL, in the data request and in a CSV export, so a
wall screen reproduces its view after a reload. Everything is checked here (a 400 naming the
parameter) and becomes query documents of ``ioc.query`` — a CQL2-JSON filter whose values are
literals, never text spliced into SQL.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ioc.dashboards.model import Dashboard, UnitLevel
from ioc.errors import InvalidParameter

CITY_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
CODE = re.compile(r"^[0-9]{1,8}$")
MAX_VALUE = 200
BUCKETS = ("day", "hour")
LEVELS: tuple[UnitLevel, ...] = ("district", "ward", "ward2019")
# Filters on an attribute value: the query parameter, the field of ``Dashboard.fields``.
VALUE_FILTERS = ("category", "status", "channel", "handling_unit")
UNIT_FILTERS = ("district", "ward", "ward2019")
PARAMETERS = (*VALUE_FILTERS, *UNIT_FILTERS, "from", "to", "bucket", "units")


@dataclass(frozen=True)
class BoardFilter:
    """One state of a dashboard (hashable: it is part of the cache key)."""

    category: str | None = None
    status: str | None = None
    channel: str | None = None
    handling_unit: str | None = None
    district: str | None = None
    ward: str | None = None
    ward2019: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    bucket: str = "day"
    units: UnitLevel = "district"

    def without(self, *names: str) -> BoardFilter:
        """The same state without some filters (a panel is not narrowed by its own dimension)."""
        # Field names chosen at run time: mypy cannot check them, the dataclass does.
        return replace(self, **dict.fromkeys(names))  # type: ignore[arg-type]

    def applied(self) -> dict[str, str]:
        """The filters in force, as the filter bar shows them."""
        return {k: v for k in (*VALUE_FILTERS, *UNIT_FILTERS) if (v := getattr(self, k))}

    def query(self) -> dict[str, str]:
        """The state as URL query parameters (what reproduces it)."""
        out = self.applied()
        if self.start:
            out["from"] = self.start.isoformat()
        if self.end:
            out["to"] = self.end.isoformat()
        out["bucket"] = self.bucket
        out["units"] = self.units
        return out

    def key(self) -> tuple[Any, ...]:
        return tuple(asdict(self).values())


def _instant(name: str, text: str) -> datetime:
    """An ISO date or date-time; without an offset it is city time (UTC+7)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameter(
            f"'{name}' must be an ISO 8601 date or date-time, not '{text[:40]}'.", parameter=name
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=CITY_TZ)


def parse_filter(board: Dashboard, params: dict[str, str], now: datetime) -> BoardFilter:
    """The state from query parameters; unknown parameters and bad values are a 400."""
    values: dict[str, Any] = {}
    for name, value in params.items():
        if name not in PARAMETERS:
            raise InvalidParameter(
                f"Unknown parameter '{name[:40]}': a dashboard takes {', '.join(PARAMETERS)}.",
                parameter=name,
            )
        if value == "":
            continue
        if name in VALUE_FILTERS:
            if len(value) > MAX_VALUE or not value.isprintable():
                raise InvalidParameter(f"'{name}' is not a value of the layer.", parameter=name)
            values[name] = value
        elif name in UNIT_FILTERS:
            if not CODE.match(value):
                raise InvalidParameter(f"'{name}' must be a unit code (digits).", parameter=name)
            values[name] = value
        elif name == "bucket":
            if value not in BUCKETS:
                raise InvalidParameter("'bucket' must be day or hour.", parameter=name)
            values[name] = value
        elif name == "units":
            if value not in LEVELS:
                raise InvalidParameter(
                    "'units' must be district, ward or ward2019.", parameter=name
                )
            values[name] = value
        else:
            values["start" if name == "from" else "end"] = _instant(name, value)
    # Without 'from' and 'to' the range is the dashboard's last days of data (resolved by
    # ioc.dashboards.panels.default_range, per data version).
    start, end = values.get("start"), values.get("end")
    if start and end and end <= start:
        raise InvalidParameter("'to' must come after 'from'.", parameter="to")
    if values.get("bucket") == "hour" and (end or now) - (start or now) > timedelta(days=31):
        raise InvalidParameter(
            "An hourly time series covers at most 31 days: narrow 'from'/'to'.", parameter="bucket"
        )
    return BoardFilter(**values)
