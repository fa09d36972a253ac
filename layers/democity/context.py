"""The city the generators draw in: wards, street network, waterways, and per-layer randomness.

Built once per seeding run. Real files are used when the data directory has them; otherwise the
synthetic wards and a synthetic street grid stand in, so seeding never needs a download.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from layers.democity import admin
from layers.democity.admin import Units
from layers.democity.geo import (
    BEN_THANH,
    distance_m,
    to_lonlat,
    to_metric,
)
from layers.democity.names import STREETS
from layers.democity.network import Network
from layers.democity.sources import find_dataset, read_dataset

# Fixed "now" of the demo city: timestamps are drawn in the 12 months before it. A fixed instant
# (not the wall clock) keeps two runs with the same seed identical.
REFERENCE_TIME = datetime(2025, 12, 1, tzinfo=UTC)

ROAD_CLASS_WEIGHT = {
    "motorway": 3.0,
    "trunk": 3.0,
    "primary": 3.0,
    "secondary": 2.5,
    "tertiary": 2.0,
    "residential": 1.0,
    "unclassified": 0.8,
    "living_street": 0.8,
    "service": 0.4,
}
# Approximate courses of the main rivers and canals (lon, lat), used when no water file exists.
SYNTHETIC_WATERWAYS = {
    "Sông Sài Gòn": [
        (106.640, 10.990),
        (106.690, 10.890),
        (106.725, 10.835),
        (106.712, 10.812),
        (106.740, 10.800),
        (106.720, 10.785),
        (106.708, 10.768),
        (106.745, 10.755),
        (106.760, 10.720),
        (106.745, 10.680),
        (106.770, 10.600),
    ],
    "Kênh Nhiêu Lộc – Thị Nghè": [
        (106.655, 10.800),
        (106.680, 10.792),
        (106.700, 10.790),
        (106.712, 10.788),
    ],
    "Kênh Tàu Hủ – Bến Nghé": [
        (106.625, 10.748),
        (106.660, 10.752),
        (106.690, 10.757),
        (106.706, 10.766),
    ],
    "Kênh Đôi – Kênh Tẻ": [
        (106.640, 10.735),
        (106.680, 10.745),
        (106.710, 10.752),
        (106.735, 10.752),
    ],
    "Kênh Tân Hóa – Lò Gốm": [(106.632, 10.790), (106.636, 10.770), (106.642, 10.750)],
    "Kênh Tham Lương": [(106.600, 10.840), (106.630, 10.830), (106.660, 10.830), (106.690, 10.845)],
}


def stable_hash(text: str) -> int:
    """A 64-bit hash of a text that is the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def layer_rng(seed: int, layer_id: str) -> np.random.Generator:
    """The random generator of one layer: depends only on the run seed and the layer id."""
    return np.random.default_rng([seed, stable_hash(layer_id)])


@dataclass
class CityContext:
    """Shared state of one seeding run."""

    data_dir: Path | None
    seed: int
    wards: Units
    units: dict[str, Units] = field(default_factory=dict)  # administrative units by dataset stem
    _roads: Network | None = None
    _water: Network | None = None
    _water_areas: np.ndarray | None = None
    _weights: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(cls, data_dir: Path | None, seed: int) -> CityContext:
        """Load the 2025 wards (real file or synthetic) and prepare the city."""
        wards = admin.real_units(data_dir, "wards_2025") or admin.synthetic_wards_2025()
        ctx = cls(data_dir, seed, wards)
        ctx.units["wards_2025"] = wards
        return ctx

    # --- administrative units -------------------------------------------------------------
    def admin_units(self, stem: str) -> Units:
        """Administrative units of a dataset stem: real when the file exists, else synthetic."""
        if stem == "wards_2025":
            return self.wards
        if stem not in self.units:
            units = admin.real_units(self.data_dir, stem)
            if units is None:
                if "legacy_synthetic" not in self.units:
                    self.units["legacy_synthetic"] = admin.synthetic_wards_2019()
                units = admin.synthetic_units(stem, self.wards, self.units["legacy_synthetic"])
            self.units[stem] = units
        return self.units[stem]

    @property
    def ward_codes(self) -> np.ndarray:
        """2025 ward codes as strings."""
        return self.wards.table["ward_code"].astype(str).to_numpy(dtype=object)

    @property
    def ward_names(self) -> np.ndarray:
        """2025 ward full names ('Phường Bến Thành')."""
        table = self.wards.table
        names = table["full_name"] if "full_name" in table else table["name"]
        return names.astype(str).to_numpy(dtype=object)

    # --- ward weights -----------------------------------------------------------------------
    def ward_weights(self, kind: str) -> np.ndarray:
        """Probability of each 2025 ward for a demo weighting (sums to 1)."""
        if kind not in self._weights:
            self._weights[kind] = self._ward_weights(kind)
        return self._weights[kind]

    def _ward_weights(self, kind: str) -> np.ndarray:
        table = self.wards.table
        codes = table["ward_code"]
        core = admin.is_old_hcmc(codes)
        urban = (
            core
            & (
                table.get("unit_type", pd.Series("Phường", index=table.index)) == "Phường"
            ).to_numpy()
        )
        area = shapely.area(to_metric(self.wards.geoms)) / 1e6
        pop = (
            pd.to_numeric(table.get("population"), errors="coerce")
            if "population" in table
            else None
        )
        pop = pop.fillna(pop.median()).to_numpy(float) if pop is not None else area * 5000
        cx, cy = self.centroids()
        if kind == "population":
            weight = pop * np.where(core, 1.0, 0.5)
        elif kind == "lowland":
            south = np.clip((10.80 - cy) / 0.08, 0, 1.5)
            near_water = np.exp(-self.water_distance(cx, cy) / 1500)
            density = pop / np.maximum(area, 0.1)
            weight = core * (0.2 + 2 * south + 1.5 * near_water) * np.sqrt(density)
        elif kind == "roads":
            weight = self.roads.ward_weight() * np.where(core, 1.0, 0.3)
        elif kind == "centre":
            weight = np.exp(-distance_m(cx, cy, *BEN_THANH) / 3000) * core
        elif kind == "water":
            weight = (
                np.exp(-self.water_distance(cx, cy) / 1000)
                * core
                * np.sqrt(pop / np.maximum(area, 0.1))
            )
        else:  # uniform over the urban wards of the former city
            weight = area * urban
        weight = np.nan_to_num(weight.astype(float))
        if weight.sum() <= 0:
            weight = area
        return weight / weight.sum()

    def centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """Interior points of the 2025 wards."""
        pts = shapely.point_on_surface(self.wards.geoms)
        return shapely.get_x(pts), shapely.get_y(pts)

    def water_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Distance in metres from lon/lat points to the nearest waterway segment."""
        water = self.water
        seg = water.nearest(x, y)
        a = np.column_stack([water.x0[seg], water.y0[seg]])
        b = np.column_stack([water.x1[seg], water.y1[seg]])
        lines = shapely.linestrings(np.stack([a, b], axis=1))
        return shapely.distance(lines, shapely.points(x, y)) * 105_000  # degrees → metres (10.8° N)

    # --- networks -----------------------------------------------------------------------
    @property
    def roads(self) -> Network:
        """The street network: OSM roads when the file exists, else a synthetic street grid."""
        if self._roads is None:
            path = find_dataset(self.data_dir, "roads_osm_2018")
            if path is not None:
                frame = read_dataset(path, ["name", "highway"])
                weight = frame["highway"].map(ROAD_CLASS_WEIGHT).fillna(0.2).to_numpy(float)
                names = frame["name"].where(frame["name"].notna(), None).to_numpy(dtype=object)
                self._roads = Network.from_lines(
                    np.asarray(frame.geometry.array),
                    names,
                    weight,
                    self.wards,
                    False,
                    frame["highway"].to_numpy(dtype=object),
                )
            else:
                self._roads = self._synthetic_streets()
        return self._roads

    @property
    def water(self) -> Network:
        """Waterway centre lines and water-area outlines (files), else the main rivers and canals."""
        if self._water is None:
            lines, names = [], []
            for stem in ("waterways_osm_2018", "water_areas_osm_2018"):
                path = find_dataset(self.data_dir, stem)
                if path is not None:
                    frame = read_dataset(path, ["name"])
                    geoms = np.asarray(frame.geometry.array)
                    if stem.startswith("water_areas"):
                        self._water_areas = geoms
                        geoms = shapely.boundary(geoms)
                    parts, rows = shapely.get_parts(geoms, return_index=True)
                    lines.append(parts)
                    names.append(
                        frame["name"]
                        .where(frame["name"].notna(), None)
                        .to_numpy(dtype=object)[rows]
                    )
            synthetic = not lines
            if synthetic:
                names = [np.array(list(SYNTHETIC_WATERWAYS), dtype=object)]
                lines = [
                    np.array(
                        [shapely.LineString(c) for c in SYNTHETIC_WATERWAYS.values()], dtype=object
                    )
                ]
                # Split into ~100 m segments so features can follow a stretch of the river.
                lines = [to_lonlat(shapely.segmentize(to_metric(lines[0]), 100.0))]
            all_lines = np.concatenate(lines)
            self._water = Network.from_lines(
                all_lines, np.concatenate(names), np.ones(len(all_lines)), self.wards, synthetic
            )
        return self._water

    def in_water(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True for lon/lat points inside a mapped water area (river, lake)."""
        _ = self.water
        if self._water_areas is None or len(x) == 0:
            return np.zeros(len(x), dtype=bool)
        areas = self._water_areas
        shapely.prepare(areas)
        bounds = shapely.bounds(areas)
        out = np.zeros(len(x), dtype=bool)
        for k, (x0, y0, x1, y1) in enumerate(bounds):
            idx = np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & ~out)
            if len(idx):
                out[idx] = shapely.intersects_xy(areas[k], x[idx], y[idx])
        return out

    def _synthetic_streets(self) -> Network:
        """A rotated street grid in every ward, denser where more people live."""
        rng = layer_rng(self.seed, "__streets__")
        table = self.wards.table
        metric = to_metric(self.wards.geoms)
        area = shapely.area(metric) / 1e6
        pop = pd.to_numeric(
            table.get("population", pd.Series(5000 * area)), errors="coerce"
        ).to_numpy(float)
        density = np.nan_to_num(pop / np.maximum(area, 0.1), nan=1000.0)
        spacing = np.clip(25_000 / np.sqrt(np.maximum(density, 1)), 150, 1500)
        lines, names, weights, kinds = [], [], [], []
        for k, ward in enumerate(metric):
            x0, y0, x1, y1 = shapely.bounds(ward)
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 0.75
            angle = rng.uniform(0, np.pi / 2)
            ticks = np.arange(-half, half, spacing[k]) + rng.uniform(0, spacing[k])
            for theta in (angle, angle + np.pi / 2):
                u, v = (
                    np.array([np.cos(theta), np.sin(theta)]),
                    np.array([-np.sin(theta), np.cos(theta)]),
                )
                a = np.array([cx, cy]) + ticks[:, None] * v - half * u
                b = np.array([cx, cy]) + ticks[:, None] * v + half * u
                grid = shapely.intersection(shapely.linestrings(np.stack([a, b], axis=1)), ward)
                parts = shapely.get_parts(grid[~shapely.is_empty(grid)])
                parts = parts[shapely.get_type_id(parts) == 1]
                lines.append(parts)
                names.append(rng.choice(np.array(STREETS, dtype=object), len(parts)))
                # Busier streets where more people live; every seventh street a main road.
                busy = np.clip(density[k] / 8000, 0.05, 3.0)
                main = rng.random(len(parts)) < 0.15
                weights.append(np.where(main, 2.5, 1.0) * busy)
                kinds.append(
                    np.where(main, "primary" if density[k] > 5000 else "tertiary", "residential")
                )
        # ~100 m segments, so that generated lines can follow a street for a chosen length.
        all_lines = to_lonlat(shapely.segmentize(np.concatenate(lines), 100.0))
        return Network.from_lines(
            all_lines,
            np.concatenate(names),
            np.concatenate(weights),
            self.wards,
            True,
            np.concatenate(kinds).astype(object),
        )


@dataclass
class FeatureContext:
    """What the attribute generator knows about each feature of a batch."""

    geoms: np.ndarray  # lon/lat geometries
    ward: np.ndarray  # index of the 2025 ward, -1 if unknown
    street: np.ndarray  # object: street name or None
    anchor_x: np.ndarray
    anchor_y: np.ndarray
    start: int  # row number of the first feature in the layer (for unique ids)
