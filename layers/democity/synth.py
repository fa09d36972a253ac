"""Generic synthetic features for any manifest: geometry from the demo weighting, attributes from
the schema. Also the step every batch goes through before it is written (``finish_batch``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from layers.democity.attributes import REFERENCE, complete_columns, skewed_choice
from layers.democity.context import CityContext, FeatureContext
from layers.democity.geo import anchor_points, cast_geometries, reproject, to_metric
from layers.democity.sampling import sample_lines, sample_points, sample_polygons, uniform_in_wards
from layers.manifest import LayerManifest

CHUNK_ROWS = 50_000

# Polygon footprints by keyword of the layer id: (keyword, (min, max) size in metres, shape).
POLYGON_SIZES: tuple[tuple[str, tuple[float, float], str], ...] = (
    ("building", (8, 35), "rect"),
    ("parcel", (12, 60), "rect"),
    ("house", (6, 20), "rect"),
    ("flood", (150, 1200), "blob"),
    ("inundat", (150, 1200), "blob"),
    ("risk", (150, 1200), "blob"),
    ("zon", (200, 1500), "blob"),
    ("park", (40, 400), "blob"),
    ("lake", (30, 300), "blob"),
    ("green", (30, 300), "blob"),
    ("project", (60, 600), "rect"),
    ("site", (30, 200), "rect"),
    ("school", (40, 150), "rect"),
    ("hospital", (60, 250), "rect"),
    ("market", (30, 120), "rect"),
    ("industrial", (300, 1500), "rect"),
    ("area", (100, 800), "blob"),
)
LINE_LENGTHS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("pipe", (80, 900)),
    ("drain", (80, 900)),
    ("sewer", (80, 900)),
    ("cable", (100, 1200)),
    ("route", (1500, 8000)),
    ("lane", (300, 3000)),
    ("dyke", (200, 2000)),
    ("embank", (200, 2000)),
    ("canal", (300, 3000)),
    ("closure", (100, 600)),
    ("work", (50, 400)),
)


@dataclass
class RawBatch:
    """Features before their attributes are completed: lon/lat geometries and what is known."""

    geoms: np.ndarray
    known: dict[str, object] = field(default_factory=dict)
    ward: np.ndarray | None = None
    street: np.ndarray | None = None


def chunk_sizes(total: int, chunk: int = CHUNK_ROWS) -> Iterator[int]:
    """Sizes of the successive batches of a layer."""
    for start in range(0, total, chunk):
        yield min(chunk, total - start)


def is_per_ward(m: LayerManifest, n_wards: int) -> bool:
    """Layers with one feature per ward: ward-level polygons (indicators, statistics) and
    point layers as many as the wards (ward offices)."""
    kind = m.geometry.type.removeprefix("Multi")
    if kind == "Polygon":
        return m.demo_spec.count == n_wards or "ward" in m.id
    return kind == "Point" and m.demo_spec.count == n_wards


# Per-ward statistics derived from the ward population (share of the population).
POPULATION_SHARES = {
    "population": 1.0,
    "households": 1 / 3.4,
    "labour_force": 0.56,
    "employed": 0.54,
    "children_6_10": 0.07,
    "active_enterprises": 0.012,
}


def period_start(name: str) -> np.datetime64:
    """The latest complete reporting period before the reference time (week, month, quarter)."""
    today = REFERENCE.astype("datetime64[D]")
    if "week" in name:  # 1970-01-01 was a Thursday: Mondays are 4 days after multiples of 7
        monday = today - ((today.astype(int) - 4) % 7)
        return monday - 7
    month = today.astype("datetime64[M]")
    if "quarter" in name:
        quarter = month - (month.astype(int) % 3)
        return (quarter - 3).astype("datetime64[D]")
    return (month - 1).astype("datetime64[D]")


def per_ward_values(
    ctx: CityContext, m: LayerManifest, rng: np.random.Generator
) -> dict[str, object]:
    """Ward-level values that agree with the ward itself (population, density, ranks)."""
    table, n = ctx.wards.table, len(ctx.wards.geoms)
    pop = (
        pd.to_numeric(table["population"], errors="coerce").to_numpy(float)
        if "population" in table
        else np.full(n, np.nan)
    )
    area = shapely.area(to_metric(ctx.wards.geoms)) / 1e6
    known: dict[str, object] = {}
    factor = rng.uniform(0.93, 1.07, n)  # one factor per ward keeps employed ≤ labour force
    if m.time_attribute:
        known[m.time_attribute] = np.full(n, period_start(m.time_attribute), dtype="datetime64[D]")
    for a in m.attributes:
        if a.type not in ("integer", "number"):
            if a.name == "address" and "admin_center" in table:
                known[a.name] = table["admin_center"].to_numpy(dtype=object)
            continue
        lo, hi = a.range or (-np.inf, np.inf)
        if a.name in POPULATION_SHARES:
            value = pop * POPULATION_SHARES[a.name] * factor
        elif "density" in a.name:
            value = pop / np.maximum(area, 0.01)
        elif a.name == "rank":
            value = rng.permutation(n) + 1.0
        else:
            continue
        known[a.name] = np.clip(np.round(value, 0 if a.type == "integer" else 1), lo, hi)
    return known


def generic_batches(
    ctx: CityContext, m: LayerManifest, rng: np.random.Generator, total: int
) -> Iterator[RawBatch]:
    """Synthetic features for any layer, by geometry type and demo weighting."""
    weight = m.demo_spec.weight
    kind = m.geometry.type.removeprefix("Multi")
    n_wards = len(ctx.wards.geoms)
    if is_per_ward(m, n_wards):
        wards = np.arange(n_wards)
        if kind == "Polygon":
            geoms = ctx.wards.geoms
        else:  # one point per ward, beside a street of the ward where there is one
            place = sample_points(ctx, rng, 4 * n_wards, "uniform", road_share=0.9)
            pts = [np.flatnonzero(place.ward == k) for k in wards]
            x, y = uniform_in_wards(ctx, wards, rng)
            x = np.array([place.x[p[0]] if len(p) else x[k] for k, p in enumerate(pts)])
            y = np.array([place.y[p[0]] if len(p) else y[k] for k, p in enumerate(pts)])
            geoms = shapely.points(x, y)
        yield RawBatch(geoms, per_ward_values(ctx, m, rng), wards)
        return
    for n in chunk_sizes(total):
        if kind == "Point":
            place = sample_points(ctx, rng, n, weight)
            yield RawBatch(shapely.points(place.x, place.y), {}, place.ward, place.street)
        elif kind == "LineString":
            length = next((r for key, r in LINE_LENGTHS if key in m.id), (100.0, 1500.0))
            lines, place = sample_lines(ctx, rng, n, weight, length)
            yield RawBatch(lines, {}, None, place.street)
        else:
            size, shape = next(
                ((s, sh) for key, s, sh in POLYGON_SIZES if key in m.id), ((30, 300), "rect")
            )
            size = size_from_area(m) or size
            polys, place = sample_polygons(ctx, rng, n, weight, size, shape)
            yield RawBatch(polys, {}, place.ward, place.street)


AREA_UNITS = {"km": 1e6, "ha": 1e4, "m": 1.0}


def size_from_area(m: LayerManifest) -> tuple[float, float] | None:
    """Footprint sizes (m) that fit the range of the layer's area attribute, if it has one."""
    spec = next((a for a in m.attributes if re.search(r"area", a.name) and a.range), None)
    if spec is None or spec.range is None:
        return None
    unit = next(
        (f for key, f in AREA_UNITS.items() if key in spec.name or key in (spec.unit or "")), 1.0
    )
    lo, hi = spec.range[0] * unit, spec.range[1] * unit
    hi = min(hi, max(lo * 40, 1.0), 25e6)  # the lower part of the range: most areas are small
    return float(np.sqrt(max(lo, 1.0)) * 1.1), float(np.sqrt(hi))


def locate_wards(ctx: CityContext, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Containing 2025 ward of each point; the nearest ward for points outside the city."""
    ward = ctx.wards.locate(x, y)
    outside = ward < 0
    if outside.any():
        tree = shapely.STRtree(ctx.wards.geoms)
        ward[outside] = tree.query_nearest(
            shapely.points(x[outside], y[outside]), all_matches=False
        )[1]
    return ward


def finish_batch(
    ctx: CityContext,
    m: LayerManifest,
    rng: np.random.Generator,
    raw: RawBatch,
    start: int,
    generated: set[str],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Cast to the layer's geometry type, complete the attributes, project to the layer's SRID."""
    geoms, rows = cast_geometries(raw.geoms, m.geometry.type)
    known = {k: _subset(v, rows) for k, v in raw.known.items()}
    for name, values in (m.source.filter or {}).items():
        if name not in known:  # synthetic rows of a filtered dataset take the filter's values
            known[name] = skewed_choice(list(values), len(geoms), rng)
    ax, ay = anchor_points(geoms)
    ward = raw.ward[rows] if raw.ward is not None else locate_wards(ctx, ax, ay)
    street = raw.street[rows] if raw.street is not None else np.full(len(geoms), None, dtype=object)
    feat = FeatureContext(geoms, ward, street, ax, ay, start)
    columns, made = complete_columns(m, known, feat, ctx, rng)
    generated.update(made)
    return columns, reproject(geoms, 4326, int(m.geometry.srid))


def _subset(values: object, rows: np.ndarray) -> np.ndarray:
    array = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
    return array[rows]


def synthetic_note(
    ctx: CityContext, m: LayerManifest, total: int, missing_dataset: str | None
) -> str:
    """One sentence saying how a synthetic layer was made."""
    wards = "synthetic" if ctx.wards.synthetic else "real"
    kind = re.sub(r"(?<!^)(?=[A-Z])", " ", m.geometry.type).lower()
    why = f" ({missing_dataset} not found in the data directory)" if missing_dataset else ""
    if is_per_ward(m, len(ctx.wards.geoms)):
        where = "polygons" if m.geometry.type.endswith("Polygon") else "(one point per ward)"
        return f"Synthetic values on the {wards} 2025 ward {where}{why}."
    return (
        f"Synthetic demo data: {total} {kind} features placed with '{m.demo_spec.weight}' weighting "
        f"in the {wards} 2025 wards{why}."
    )
