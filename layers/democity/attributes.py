"""Attribute values for generated features, from the manifest's schema and the attribute names.

Columns are numpy arrays: float64 with NaN for integer/number, datetime64 with NaT for dates and
timestamps, object arrays with None for text and boolean. Categories are skewed (the first listed
value is the most common), numbers stay inside ``range``, required attributes are never null.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import shapely

from layers.democity.context import REFERENCE_TIME, CityContext, FeatureContext
from layers.democity.geo import BEN_THANH, distance_m, to_metric
from layers.democity.sources import coerce, is_null
from layers.democity.text import layer_ids, projected_coordinate, text_column
from layers.manifest import AttributeSpec, LayerManifest

OPTIONAL_NULL_SHARE = 0.04
ICT_OFFSET = np.timedelta64(7, "h")  # Vietnam time (UTC+7), for believable hours of the day
REFERENCE = np.datetime64(REFERENCE_TIME.replace(tzinfo=None), "s")
# Relative activity by local hour of day (citizen reports, incidents): quiet at night.
DIURNAL = np.array(
    [
        1,
        0.6,
        0.4,
        0.3,
        0.4,
        0.8,
        1.8,
        3.2,
        4.2,
        4.6,
        4.6,
        4.2,
        3.4,
        3.6,
        4.0,
        4.2,
        4.4,
        4.6,
        4.0,
        3.4,
        2.8,
        2.2,
        1.6,
        1.2,
    ]
)

# (pattern on the attribute name, (low, high)) used when a number has no range.
NUMBER_DEFAULTS: tuple[tuple[str, tuple[float, float]], ...] = (
    (r"population|residents|inhabitants", (800, 60_000)),
    (r"households", (200, 15_000)),
    (r"depth_cm", (5, 80)),
    (r"depth", (0.05, 0.8)),
    (r"water_level|tide", (0.8, 1.8)),
    (r"rain", (0, 120)),
    (r"floors|storeys|stories", (1, 25)),
    (r"height", (3, 60)),
    (r"year", (1965, 2025)),
    (r"^pop_", (5_000, 500_000)),
    (r"^den_|density", (500, 40_000)),
    (r"beds", (20, 1500)),
    (r"students|pupils", (200, 3000)),
    (r"capacity|seats|slots|spaces", (10, 600)),
    (r"lanes", (1, 6)),
    (r"speed", (8, 60)),
    (r"width", (3, 40)),
    (r"diameter", (200, 2000)),
    (r"temperature", (24, 36)),
    (r"pm25|pm2_5", (8, 110)),
    (r"pm10", (15, 160)),
    (r"aqi", (20, 200)),
    (r"noise|db", (45, 85)),
    (r"percent|pct|share|rate", (0, 100)),
    (r"ratio", (0, 1)),
    (r"score|index", (0, 100)),
    (r"price|value|cost|budget", (50_000_000, 20_000_000_000)),
    (r"power|kw", (5, 500)),
    (r"elevation|altitude", (0.3, 12)),
    (r"duration|minutes", (5, 240)),
    (r"hours", (1, 72)),
    (r"count|number|num_|total|vehicles|visitors|cases", (0, 500)),
)


def skewed_choice(
    values: list, n: int, rng: np.random.Generator, weights: list[float] | None = None
) -> np.ndarray:
    """Categories drawn with decreasing shares in the listed order (or with given weights)."""
    p = (
        np.asarray(weights, float)
        if weights is not None
        else 1.0 / (np.arange(len(values)) + 1.0) ** 1.1
    )
    out = np.empty(n, dtype=object)
    out[:] = [values[i] for i in rng.choice(len(values), n, p=p / p.sum())]
    return out


def skewed_numbers(
    lo: float, hi: float, n: int, rng: np.random.Generator, integer: bool
) -> np.ndarray:
    """Numbers in [lo, hi], more of them in the lower part of the range."""
    values = lo + (hi - lo) * rng.beta(1.6, 3.0, n)
    return np.round(values) if integer else np.round(values, 3 if hi - lo < 10 else 1)


def recent_timestamps(n: int, rng: np.random.Generator, days: float = 365.0) -> np.ndarray:
    """UTC instants in the ``days`` before the reference time, recent ones more likely,
    at believable local hours of the day."""
    day = np.floor(days * rng.beta(1.0, 2.2, n)).astype("timedelta64[D]")
    hour = rng.choice(24, n, p=DIURNAL / DIURNAL.sum()).astype("timedelta64[h]")
    second = rng.integers(0, 3600, n).astype("timedelta64[s]")
    midnight = REFERENCE.astype("datetime64[D]").astype("datetime64[s]")
    out = midnight - day - np.timedelta64(1, "D") + hour + second - ICT_OFFSET
    return np.minimum(out, REFERENCE)


# Numbers whose real distribution sits high in their range (shares of success, coverage …).
HIGH_SKEW = r"satisfaction|on_time|coverage|occupancy|enrolment|achievement|canopy|battery|disbursed|progress"
# Years and dates that lie ahead rather than behind.
FUTURE = r"expected|next_|planned|completion|end_year|target|expir|valid_to|until|deadline"
# Date/time attributes that follow the layer's time attribute: (pattern, min hours, max hours, may be future).
FOLLOWS = (
    (r"resolved|repaired|closed|completed|finished|resolved_on", 2, 24 * 12, False),
    (r"ends?_at|end_at|ends_on", 2, 72, True),
    (r"expires", 3, 24, True),
    (r"due", 24, 24 * 7, True),
    (r"end_date", 24 * 7, 24 * 180, True),
)


def generate_column(
    m: LayerManifest,
    attr: AttributeSpec,
    feat: FeatureContext,
    ctx: CityContext,
    rng: np.random.Generator,
    columns: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Values of one attribute for a batch of features (``columns``: those already made)."""
    n, name = len(feat.geoms), attr.name
    columns = columns or {}
    if name == m.id_attribute and attr.type in ("integer", "number"):
        return np.arange(feat.start + 1, feat.start + n + 1, dtype=float)
    if name == "postcode":
        return np.array(
            [f"7{i:04d}" for i in range(10 * feat.start + 10, 10 * (feat.start + n) + 10, 10)],
            dtype=object,
        )
    if name == m.id_attribute and attr.type == "text" and name != "ward_code":
        return layer_ids(m, name, feat.start, n)
    if attr.values is not None:
        return skewed_choice(list(attr.values), n, rng)
    if attr.type in ("integer", "number"):
        if name in ("x_m", "y_m") and m.geometry.srid != 4326:
            return projected_coordinate(name, feat, int(m.geometry.srid))
        return _number(m, attr, feat, rng)
    if attr.type == "boolean":
        likely = r"active|operat|open|available|working|in_service|online|licensed|usable|free$|access|checked"
        return np.asarray(rng.random(n) < (0.85 if re.search(likely, name) else 0.3), dtype=object)
    if attr.type in ("date", "timestamp"):
        return _time(m, attr, n, rng, columns)
    return text_column(m, attr, feat, ctx, rng, columns)


def _number(
    m: LayerManifest, attr: AttributeSpec, feat: FeatureContext, rng: np.random.Generator
) -> np.ndarray:
    n, name, integer = len(feat.geoms), attr.name, attr.type == "integer"
    measured = _measure(name, attr.unit, feat.geoms)
    if measured is not None:
        lo, hi = attr.range if attr.range else (-np.inf, np.inf)
        return np.round(np.clip(measured, lo, hi), 0 if integer else 2)
    if attr.range is not None:
        lo, hi = attr.range
    else:
        lo, hi = next(
            (r for pattern, r in NUMBER_DEFAULTS if re.search(pattern, name)),
            (0, 1000 if integer else 100),
        )
    if "year" in name:
        now = REFERENCE_TIME.year
        if re.search(FUTURE, name):
            lo = max(lo, now)
        else:
            hi = min(hi, now) if lo <= now else hi
        return np.round(lo + (hi - lo) * rng.beta(2.5, 1.3, n))  # recent years more likely
    if re.search(r"price|rent|land_value", name):
        # Land prices fall with distance from the centre (Bến Thành), with street-level noise.
        d = distance_m(feat.anchor_x, feat.anchor_y, *BEN_THANH) / 1000
        share = np.clip(np.exp(-d / 4.0) * rng.lognormal(0, 0.35, n), 0, 1)
        return np.round(lo + (hi - lo) * share**1.5, -3 if hi > 1e6 else 0)
    if re.search(r"elevation|^h_m$|altitude|crest_level", name):
        # Flat delta city: 0–3 m in the south, rising to 20–30 m on the northern terraces.
        base = np.clip((feat.anchor_y - 10.72) * 120, 0.3, 40) + rng.normal(0, 0.8, n)
        return np.round(np.clip(base, lo, hi), 2)
    if re.search(r"deaths|injur|fatalit|casualt", name):
        # Most incidents hurt nobody; a few hurt several people.
        counts = rng.poisson(0.15 if "death" in name or "fatal" in name else 0.8, n) * (
            rng.random(n) < 0.6
        )
        return np.clip(counts.astype(float), lo, hi)
    if re.search(HIGH_SKEW, name):
        return np.round(lo + (hi - lo) * rng.beta(4.0, 1.4, n), 0 if integer else 1)
    return skewed_numbers(lo, hi, n, rng, integer)


def _measure(name: str, unit: str | None, geoms: np.ndarray) -> np.ndarray | None:
    """Areas and lengths taken from the generated geometry itself."""
    unit = (unit or "").lower()
    kinds = shapely.get_type_id(geoms)
    if re.search(r"area|footprint", name) and np.all(np.isin(kinds, (3, 6))):
        area = shapely.area(to_metric(geoms))
        return (
            area / 1e6
            if ("km" in name or "km" in unit)
            else area / 1e4
            if ("ha" in name or unit == "ha")
            else area
        )
    if re.search(r"length", name) and np.all(np.isin(kinds, (1, 5))):
        length = shapely.length(to_metric(geoms))
        return length / 1000 if ("km" in name or "km" in unit) else length
    return None


def _time(
    m: LayerManifest,
    attr: AttributeSpec,
    n: int,
    rng: np.random.Generator,
    columns: dict[str, np.ndarray],
) -> np.ndarray:
    name, unit = attr.name, "D" if attr.type == "date" else "s"
    start = columns.get(m.time_attribute) if m.time_attribute and name != m.time_attribute else None
    follow = next((f for f in FOLLOWS if re.search(f[0], name)), None)
    if start is not None and follow is not None:
        hours = rng.lognormal(np.log(np.sqrt(follow[1] * follow[2])), 0.6, n).clip(
            follow[1], follow[2]
        )
        stamps = start.astype("datetime64[s]") + (hours * 3600).astype("timedelta64[s]")
        if not follow[3]:  # a past event cannot be later than now: not happened yet → null
            stamps = np.where(stamps <= REFERENCE, stamps, np.datetime64("NaT"))
    elif re.search(FUTURE, name):
        stamps = REFERENCE + (rng.uniform(1, 60 if "next" in name else 900, n) * 86400).astype(
            "timedelta64[s]"
        )
    elif name == m.time_attribute:
        days = 7.0 if m.cadence in ("realtime", "hourly") else 365.0
        stamps = recent_timestamps(n, rng, days)
    elif re.search(
        r"built|construct|establish|open|founded|install|commission|since|issued|licensed|named",
        name,
    ):
        span = np.datetime64("2024-12-31", "s") - np.datetime64("1975-01-01", "s")
        stamps = np.datetime64("1975-01-01", "s") + (
            rng.beta(2.2, 1.4, n) * span.astype(int)
        ).astype("timedelta64[s]")
    else:
        stamps = recent_timestamps(n, rng, 730.0)
    return stamps.astype(f"datetime64[{unit}]")


def complete_columns(
    m: LayerManifest,
    known: Mapping[str, object],
    feat: FeatureContext,
    ctx: CityContext,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every manifest attribute for a batch: known (real or hand-made) values where given,
    generated values elsewhere; returns the columns and the names that had to be generated."""
    columns: dict[str, np.ndarray] = {}
    generated: list[str] = []
    n = len(feat.geoms)
    # The time attribute first: end and resolution times are drawn after it.
    ordered = sorted(m.attributes, key=lambda a: a.name != m.time_attribute)
    for attr in ordered:
        if attr.name in known:
            column = coerce(known[attr.name], attr)
            missing = is_null(column)
            if attr.required and missing.any():
                fill = generate_column(m, attr, feat, ctx, rng, columns)
                column = column.astype(object) if column.dtype.kind == "O" else column
                column[missing] = fill[missing]
        else:
            column = generate_column(m, attr, feat, ctx, rng, columns)
            generated.append(attr.name)
            if not attr.required and attr.name not in (
                m.id_attribute,
                m.time_attribute,
                "x_m",
                "y_m",
            ):
                drop = rng.random(n) < OPTIONAL_NULL_SHARE
                column = column.copy()
                column[drop] = (
                    np.nan
                    if column.dtype.kind == "f"
                    else (np.datetime64("NaT") if column.dtype.kind == "M" else None)
                )
        columns[attr.name] = column
    return {a.name: columns[a.name] for a in m.attributes}, generated
