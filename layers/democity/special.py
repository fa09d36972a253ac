"""Hand-tuned generators for the layers a demo looks at first: flood points, 1022 citizen
reports, digital addresses, buildings, parcels, road segments and one-stop centres.

Each builder returns a :class:`Special`: batches of lon/lat features with the values it knows
(matched to the manifest's attributes by name); the generic step fills the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import numpy as np
import shapely

from layers.democity.attributes import REFERENCE, recent_timestamps, skewed_choice
from layers.democity.context import CityContext
from layers.democity.footprints import buildings, parcels
from layers.democity.handmade import Special, attr, put, wards_note
from layers.democity.roadsplit import road_segment_batches
from layers.democity.sampling import sample_points
from layers.democity.synth import RawBatch, chunk_sizes
from layers.democity.text import CODE_SPACE, house_numbers, streets_for, unique_codes
from layers.manifest import LayerManifest


def _by_level(values: list, score: np.ndarray, cuts: list[float]) -> np.ndarray:
    """Ordered categories (low → high) chosen by thresholds on a score."""
    idx = np.minimum(np.searchsorted(cuts, score), len(values) - 1)
    return np.asarray(values, dtype=object)[idx]


# --- flood points -----------------------------------------------------------------------------
def flood_points(ctx: CityContext, m: LayerManifest, total: int) -> Special:
    """Street flooding in low-lying wards: shallow mostly, rainy-season afternoons."""

    def batches(rng: np.random.Generator) -> Iterator[RawBatch]:
        for n in chunk_sizes(total):
            place = sample_points(ctx, rng, n, "lowland", offset_m=(0.0, 6.0), road_share=0.85)
            depth_cm = np.clip(rng.lognormal(np.log(20), 0.6, n), 5, 80).round()
            known: dict[str, object] = {}
            depth = attr(m, r"depth", ("integer", "number"))
            if depth is not None:
                lo, hi = depth.range or (
                    (5, 80) if "cm" in (depth.name + (depth.unit or "")) else (0.05, 0.8)
                )
                scale = 1.0 if "cm" in (depth.name + (depth.unit or "")) or hi > 5 else 0.01
                put(known, depth, np.clip(depth_cm * scale, lo, hi))
            level = attr(m, r"severity|level|class")
            if level is not None and level.values:
                known[level.name] = _by_level(
                    list(level.values), depth_cm, [15.0, 30.0, 50.0][: len(level.values) - 1]
                )
            put(
                known,
                attr(m, r"duration|minutes", ("integer", "number")),
                np.round(depth_cm * rng.uniform(2, 6, n) + rng.uniform(10, 40, n)),
            )
            observed = _rainy_season(n, rng)
            if m.time_attribute:
                known[m.time_attribute] = observed
            status = attr(m, r"status|state")
            if status is not None and status.values:
                # Water still standing only for the last few hours' floods; older ones receded.
                ongoing = [v for v in status.values if re.search(r"đang|ongoing|active", str(v))]
                done = [v for v in status.values if v not in ongoing] or list(status.values)
                recent = (REFERENCE - observed) < np.timedelta64(6, "h")
                values = skewed_choice(done, n, rng)
                if ongoing:
                    values[recent] = ongoing[0]
                known[status.name] = values
            streets = streets_for(place.street, rng)
            put(
                known,
                attr(m, r"^name$|location", ("text",)),
                np.array([f"Điểm ngập {s}" for s in streets], dtype=object),
            )
            put(known, attr(m, r"street|road", ("text",)), streets)
            yield RawBatch(shapely.points(place.x, place.y), known, place.ward, place.street)

    note = f"Synthetic flood points on streets of low-lying wards (south and riverside) in the {wards_note(ctx)} wards."
    return Special(batches, total, True, note)


def _rainy_season(n: int, rng: np.random.Generator) -> np.ndarray:
    """Instants of the last 12 months, mostly May–November and 14:00–21:00 local time."""
    month_weight = np.array([0.3, 0.2, 0.2, 0.4, 1.5, 2.5, 2.5, 2.8, 3.2, 3.4, 2.6, 0.9])
    out = np.empty(0, dtype="datetime64[s]")
    while len(out) < n:
        cand = recent_timestamps(3 * n, rng, 365.0)
        months = (cand + np.timedelta64(7, "h")).astype("datetime64[M]").astype(int) % 12
        keep = rng.random(len(cand)) < month_weight[months] / month_weight.max()
        out = np.concatenate([out, cand[keep]])
    out = out[:n]
    day = (out + np.timedelta64(7, "h")).astype("datetime64[D]")
    hour = rng.choice(
        [14, 15, 16, 17, 18, 19, 20, 21, 6, 7],
        n,
        p=[0.08, 0.12, 0.15, 0.17, 0.16, 0.12, 0.08, 0.05, 0.03, 0.04],
    )
    stamp = day.astype("datetime64[s]") + (hour * 3600 + rng.integers(0, 3600, n)).astype(
        "timedelta64[s]"
    )
    return np.minimum(stamp - np.timedelta64(7, "h"), REFERENCE)


# --- 1022 citizen reports -----------------------------------------------------------------------
# Shares by topic keyword (Vietnamese or English category values), after the city's 1022 reports.
REPORT_SHARES = (
    (r"trật tự|vỉa hè|lấn chiếm|urban_order|sidewalk|encroach", 24),
    (r"môi trường|rác|environment|waste|garbage", 18),
    (r"giao thông|đường|traffic|road|pothole", 14),
    (r"ồn|noise", 9),
    (r"xây dựng|construction|building", 8),
    (r"ngập|thoát nước|flood|drain", 8),
    (r"an ninh|security|crime", 6),
    (r"chiếu sáng|đèn|light", 5),
    (r"cây|tree", 4),
    (r"điện|nước|utility|water|power", 4),
)
STATUS_CLASSES = (
    ("closed", r"resolv|closed|done|complet|finish|đã xử lý|hoàn thành|đã giải quyết|đã đóng"),
    ("rejected", r"reject|invalid|duplicate|từ chối|không|trùng"),
    ("progress", r"progress|processing|assigned|forward|đang|chuyển"),
    ("open", r"new|open|received|pending|submitted|mới|tiếp nhận|chờ"),
)


def _topic_weights(values: list) -> list[float]:
    weights = []
    for rank, value in enumerate(values):
        share = next(
            (s for pattern, s in REPORT_SHARES if re.search(pattern, str(value).lower())), None
        )
        weights.append(share if share is not None else 6.0 / (rank + 1))
    return weights


def _status(
    values: list, age_days: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Status by age: most old reports are resolved, most of the last days' still open."""
    classes = {c: [v for v in values if re.search(p, str(v).lower())] for c, p in STATUS_CLASSES}
    u = rng.random(len(age_days))
    p_closed = 0.93 * (1 - np.exp(-age_days / 5))
    p_rejected = 0.05 * (1 - np.exp(-age_days / 2))
    p_progress = (1 - p_closed - p_rejected) * 0.6
    cls = np.where(
        u < p_closed,
        "closed",
        np.where(
            u < p_closed + p_rejected,
            "rejected",
            np.where(u < p_closed + p_rejected + p_progress, "progress", "open"),
        ),
    )
    out = np.empty(len(age_days), dtype=object)
    for c in ("closed", "rejected", "progress", "open"):
        mask = cls == c
        options = (
            classes[c] or [v for v in values if not any(v in classes[k] for k in classes)] or values
        )
        out[mask] = np.asarray(options, dtype=object)[
            rng.integers(0, len(options), int(mask.sum()))
        ]
    finished = np.isin(cls, ("closed", "rejected"))
    return out, finished


def reports_1022(ctx: CityContext, m: LayerManifest, total: int) -> Special:
    """Citizen reports to the 1022 hotline, where people live, with a believable life cycle."""
    names = ctx.ward_names

    def batches(rng: np.random.Generator) -> Iterator[RawBatch]:
        for n in chunk_sizes(total):
            place = sample_points(ctx, rng, n, "population", offset_m=(2.0, 15.0), road_share=0.85)
            reported = recent_timestamps(n, rng, 365.0)
            known: dict[str, object] = {}
            if m.time_attribute:
                known[m.time_attribute] = reported
            category = attr(m, r"categor|topic|field|type")
            if category is not None and category.values:
                known[category.name] = skewed_choice(
                    list(category.values), n, rng, _topic_weights(list(category.values))
                )
            age = (REFERENCE - reported).astype("timedelta64[s]").astype(float) / 86400
            finished = age > 3
            status = attr(m, r"status|state")
            if status is not None and status.values:
                known[status.name], finished = _status(list(status.values), age, rng)
            delay = np.minimum(rng.lognormal(np.log(36 * 3600), 0.9, n), age * 86400 * 0.98)
            closed_at = np.where(
                finished, reported + delay.astype("timedelta64[s]"), np.datetime64("NaT")
            )
            put(
                known,
                attr(m, r"resolved|closed|completed|finished", ("timestamp", "date")),
                closed_at,
            )
            put(
                known,
                attr(m, r"handling_unit|handler|assigned|responsible|unit", ("text",)),
                "UBND " + names[place.ward].astype(object),
            )
            streets = streets_for(place.street, rng)
            where = np.array(
                [f"{h} {s}" for h, s in zip(house_numbers(n, rng), streets, strict=True)],
                dtype=object,
            )
            put(
                known,
                attr(m, r"address|location", ("text",)),
                where + ", " + names[place.ward].astype(object),
            )
            topic = known.get(category.name) if category is not None else None
            about = (
                np.asarray(topic, dtype=object)
                if topic is not None
                else np.full(n, "Phản ánh", dtype=object)
            )
            put(
                known,
                attr(m, r"title|summary|subject|desc|content", ("text",)),
                np.array(
                    [f"{str(t).capitalize()} tại {w}" for t, w in zip(about, where, strict=True)],
                    dtype=object,
                ),
            )
            yield RawBatch(shapely.points(place.x, place.y), known, place.ward, place.street)

    note = f"Synthetic citizen reports placed by population in the {wards_note(ctx)} wards; not real reports."
    return Special(batches, total, True, note)


# --- digital addresses ----------------------------------------------------------------------------
def digital_addresses(ctx: CityContext, m: LayerManifest, total: int) -> Special:
    """House addresses along named streets where people live, each with a unique 10-digit code."""
    named = ctx.roads.subset(np.array([s is not None for s in ctx.roads.name], dtype=bool))
    network = named if len(named) else ctx.roads
    names = ctx.ward_names

    def batches(rng: np.random.Generator) -> Iterator[RawBatch]:
        offset = int(rng.integers(0, CODE_SPACE))
        start = 0
        for n in chunk_sizes(total):
            place = sample_points(
                ctx,
                rng,
                n,
                "population",
                offset_m=(5.0, 18.0),
                road_share=0.97,
                network=network,
                only_networked=True,
            )
            streets = streets_for(place.street, rng)
            numbers = house_numbers(n, rng)
            known: dict[str, object] = {}
            put(
                known,
                attr(m, r"^code$|digital|address_code", ("text",)),
                unique_codes(start, n, offset),
            )
            put(known, attr(m, r"house|number", ("text",)), numbers)
            put(known, attr(m, r"street|road", ("text",)), streets)
            full = np.array(
                [
                    f"{h} {s}, {w}, Thành phố Hồ Chí Minh"
                    for h, s, w in zip(numbers, streets, names[place.ward], strict=True)
                ],
                dtype=object,
            )
            put(known, attr(m, r"address|full|label", ("text",)), full)
            start += n
            yield RawBatch(shapely.points(place.x, place.y), known, place.ward, place.street)

    note = f"Synthetic addresses on {'real OSM' if not ctx.roads.synthetic else 'synthetic'} streets; codes are demo codes."
    return Special(batches, total, True, note)


# --- road segments and one-stop centres --------------------------------------------------------
def road_segments(ctx: CityContext, m: LayerManifest, total: int) -> Special:
    """Pieces of the street network (real OSM roads when loaded), about equal in length."""
    source = (
        "the real OSM 2018 roads (ODbL 1.0, © OpenStreetMap contributors)"
        if not ctx.roads.synthetic
        else "the synthetic street grid"
    )
    return Special(
        lambda rng: road_segment_batches(ctx, m, rng, total),
        total,
        True,
        f"Segments cut from {source}; attribute values are synthetic.",
    )


def one_stop_centres(ctx: CityContext, m: LayerManifest, total: int) -> Special:
    """One public-administration service centre per ward, inside the ward."""
    table, n = ctx.wards.table, len(ctx.wards.geoms)

    def batches(rng: np.random.Generator) -> Iterator[RawBatch]:
        points = shapely.point_on_surface(ctx.wards.geoms)
        unit = table["unit_type"].astype(str).str.lower() if "unit_type" in table else "phường"
        short = table["name"].astype(str) if "name" in table else ctx.ward_names
        known: dict[str, object] = {}
        put(
            known,
            attr(m, r"^name$|title", ("text",)),
            # np.asarray: ward_names is an array, not a Series, when the table has no names.
            np.asarray("Trung tâm Phục vụ hành chính công " + unit + " " + short, dtype=object),
        )
        if "admin_center" in table:
            put(known, attr(m, r"address", ("text",)), table["admin_center"].to_numpy(dtype=object))
        yield RawBatch(points, known, np.arange(n))

    return Special(
        batches,
        n,
        True,
        f"One centre per ward at an interior point of the {wards_note(ctx)} ward; "
        "locations are not the real offices.",
    )


SPECIAL: dict[str, Callable[[CityContext, LayerManifest, int], Special]] = {
    "flood_points": flood_points,
    "reports_1022": reports_1022,
    "digital_addresses": digital_addresses,
    "buildings": buildings,
    "parcels": parcels,
    "road_segments": road_segments,
    "one_stop_centres": one_stop_centres,
}
