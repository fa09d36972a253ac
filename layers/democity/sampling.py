"""Where generated features go: points, lines and small polygons drawn inside the wards with the
manifest's demo weighting (population, lowland, roads, centre, uniform, water).

All functions are vectorised with numpy and shapely 2; loops run over wards (168), never over
features, so a million points take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from layers.democity.context import CityContext
from layers.democity.geo import BEN_THANH, blobs, offset_lonlat, random_walks, rectangles
from layers.democity.network import Network

# Share of points put along a street (rest: anywhere in the ward) for each weighting.
ROAD_SHARE = {
    "population": 0.8,
    "roads": 1.0,
    "uniform": 0.35,
    "lowland": 0.7,
    "water": 0.0,
    "centre": 0.6,
}


@dataclass
class Placement:
    """Generated lon/lat locations with what is known about their surroundings."""

    x: np.ndarray
    y: np.ndarray
    ward: np.ndarray  # index of the containing 2025 ward
    bearing: np.ndarray  # direction of the nearby street (radians, east = 0) or random
    street: np.ndarray  # object: name of the nearby street, or None
    segment: np.ndarray  # network segment the point was drawn on, -1 if none
    network: Network | None

    def take(self, keep: np.ndarray) -> Placement:
        """The subset selected by an index or mask."""
        return Placement(
            self.x[keep],
            self.y[keep],
            self.ward[keep],
            self.bearing[keep],
            self.street[keep],
            self.segment[keep],
            self.network,
        )


def sample_points(
    ctx: CityContext,
    rng: np.random.Generator,
    n: int,
    weight: str,
    offset_m: tuple[float, float] = (4.0, 25.0),
    road_share: float | None = None,
    network: Network | None = None,
    only_networked: bool = False,
) -> Placement:
    """``n`` points inside the wards, distributed by the weighting; none falls in mapped water.

    A share of the points is put beside the street network (or ``network``), the rest anywhere
    in the chosen ward; ``water`` weighting puts them 15–250 m from rivers and canals.
    ``only_networked`` keeps to wards the network reaches (OSM 2018 misses the outer wards).
    """
    road_share = ROAD_SHARE.get(weight, 0.5) if road_share is None else road_share
    if network is None:
        network = ctx.water if weight == "water" else ctx.roads
    chunks: list[Placement] = []
    remaining = n
    for _ in range(12):
        if remaining <= 0:
            break
        m = int(remaining * 1.2) + 16
        batch = _draw(ctx, rng, m, weight, network, offset_m, road_share, only_networked)
        located = ctx.wards.locate(batch.x, batch.y)
        ok = (located >= 0) & ~ctx.in_water(batch.x, batch.y)
        batch.ward = located
        batch = batch.take(np.flatnonzero(ok)[:remaining])
        chunks.append(batch)
        remaining -= len(batch.x)
    if remaining > 0:
        raise RuntimeError(f"could not place {n} points with weighting {weight!r}")
    columns = {
        f: np.concatenate([getattr(c, f) for c in chunks])
        for f in ("x", "y", "ward", "bearing", "street", "segment")
    }
    out = Placement(**columns, network=network)
    return out.take(rng.permutation(n))


def _draw(
    ctx: CityContext,
    rng: np.random.Generator,
    m: int,
    weight: str,
    network: Network,
    offset_m: tuple[float, float],
    road_share: float,
    only_networked: bool = False,
) -> Placement:
    x, y = np.empty(m), np.empty(m)
    bearing = rng.uniform(-np.pi, np.pi, m)
    street = np.full(m, None, dtype=object)
    segment = np.full(m, -1, dtype=np.int64)
    if weight == "centre":
        # Distance from Bến Thành with a decaying density (median about 3 km).
        r = rng.gamma(1.6, 2_200, m)
        theta = rng.uniform(0, 2 * np.pi, m)
        x, y = offset_lonlat(
            np.full(m, BEN_THANH[0]), np.full(m, BEN_THANH[1]), r * np.cos(theta), r * np.sin(theta)
        )
        on_road = rng.random(m) < road_share
        if on_road.any():  # move a share onto the nearest street segment's line
            seg = network.nearest(x[on_road], y[on_road])
            px, py, pb = network.points_on(seg, rng, offset_m)
            x[on_road], y[on_road], bearing[on_road] = px, py, pb
            street[on_road], segment[on_road] = network.name[seg], seg
        return Placement(x, y, np.full(m, -1), bearing, street, segment, network)
    if weight == "water":
        core_ward = ctx.ward_weights("water") > 0
        mask = (network.ward >= 0) & core_ward[np.maximum(network.ward, 0)]
        seg = network.pick(m, rng, mask if mask.any() else None)
        # Near the bank, never on it: 15–250 m to the side of the centre line or outline.
        x, y, bearing = network.points_on(seg, rng, (15.0, 250.0))
        return Placement(x, y, np.full(m, -1), bearing, street, seg, network)
    probs = ctx.ward_weights(weight)
    covered = network.ward_weight() > 0
    if only_networked and (probs * covered).sum() > 0:
        probs = probs * covered / (probs * covered).sum()
    ward = rng.choice(len(probs), m, p=probs)
    has_roads = covered[ward]
    on_road = has_roads & (rng.random(m) < road_share)
    if on_road.any():
        seg = network.pick_in_wards(ward[on_road], rng)
        x[on_road], y[on_road], bearing[on_road] = network.points_on(seg, rng, offset_m)
        street[on_road], segment[on_road] = network.name[seg], seg
    free = ~on_road
    x[free], y[free] = uniform_in_wards(ctx, ward[free], rng)
    return Placement(x, y, ward, bearing, street, segment, network)


def uniform_in_wards(
    ctx: CityContext, ward: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One uniform random point inside each listed ward (rejection sampling in the bbox)."""
    x, y = np.empty(len(ward)), np.empty(len(ward))
    geoms = ctx.wards.geoms
    for k in np.unique(ward):
        rows = np.flatnonzero(ward == k)
        x0, y0, x1, y1 = shapely.bounds(geoms[k])
        fill = max(shapely.area(geoms[k]) / max((x1 - x0) * (y1 - y0), 1e-12), 0.02)
        got_x, got_y, need = [], [], len(rows)
        while need > 0:
            m = int(need / fill * 1.3) + 8
            cx, cy = rng.uniform(x0, x1, m), rng.uniform(y0, y1, m)
            inside = shapely.contains_xy(geoms[k], cx, cy)
            got_x.append(cx[inside][:need])
            got_y.append(cy[inside][:need])
            need -= int(min(inside.sum(), need))
        x[rows], y[rows] = np.concatenate(got_x), np.concatenate(got_y)
    return x, y


def sample_lines(
    ctx: CityContext,
    rng: np.random.Generator,
    n: int,
    weight: str,
    length_m: tuple[float, float] = (100.0, 1500.0),
) -> tuple[np.ndarray, Placement]:
    """``n`` polylines: stretches of the street (or water) network where one is near, else
    gently bending walks; returns the lines and their start placements."""
    start = sample_points(ctx, rng, n, weight, offset_m=(0.0, 0.0), road_share=0.9)
    length = np.exp(rng.uniform(np.log(length_m[0]), np.log(length_m[1]), n))
    lines = np.empty(n, dtype=object)
    follow = start.segment >= 0
    if follow.any() and start.network is not None:
        lines[follow] = follow_network(start.network, start.segment[follow], length[follow])
    walk = ~follow
    if walk.any():
        lines[walk] = random_walks(
            start.x[walk], start.y[walk], length[walk], rng, start.bearing[walk]
        )
    return lines, start


def follow_network(
    network: Network, seg: np.ndarray, length_m: np.ndarray, max_segments: int = 40
) -> np.ndarray:
    """Polylines that run along the network from given segments for about the given length."""
    n, total = len(seg), len(network)
    idx = seg[:, None] + np.arange(max_segments)[None, :]
    safe = np.minimum(idx, total - 1)
    valid = (idx < total) & (network.line[safe] == network.line[seg][:, None])
    valid = np.cumprod(valid, axis=1).astype(bool)
    seg_len = np.where(valid, network.length_m()[safe], 0.0)
    before = np.cumsum(seg_len, axis=1) - seg_len
    take = valid & (before < length_m[:, None])
    take[:, 0] = True
    last = take.sum(axis=1) - 1
    xs = np.concatenate([np.where(take, network.x0[safe], np.nan), np.zeros((n, 1))], axis=1)
    ys = np.concatenate([np.where(take, network.y0[safe], np.nan), np.zeros((n, 1))], axis=1)
    keep = np.concatenate([take, np.zeros((n, 1), dtype=bool)], axis=1)
    rows = np.arange(n)
    end = safe[rows, last]
    xs[rows, last + 1], ys[rows, last + 1] = network.x1[end], network.y1[end]
    keep[rows, last + 1] = True
    index = np.broadcast_to(rows[:, None], keep.shape)[keep]
    return shapely.linestrings(xs[keep], ys[keep], indices=index)


def sample_polygons(
    ctx: CityContext,
    rng: np.random.Generator,
    n: int,
    weight: str,
    size_m: tuple[float, float],
    shape: str = "rect",
) -> tuple[np.ndarray, Placement]:
    """``n`` small polygons: street-aligned rectangles (buildings, parcels) or irregular blobs."""
    lo, hi = size_m
    width = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    if shape == "rect":
        depth = width * rng.uniform(0.6, 1.8, n)
        place = sample_points(
            ctx, rng, n, weight, offset_m=(4.0 + depth.mean() / 2, 6.0 + depth.mean())
        )
        return rectangles(place.x, place.y, width, depth, place.bearing), place
    place = sample_points(ctx, rng, n, weight, offset_m=(0.0, hi / 2))
    return blobs(place.x, place.y, width / 2, rng), place
