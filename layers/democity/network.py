"""A line network (streets or waterways) as straight segments, for sampling along it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from layers.democity.admin import Units
from layers.democity.geo import M_PER_DEG_LAT, distance_m, m_per_deg_lon


@dataclass
class Network:
    """Straight segments of lines (streets or waterways), ordered along each line."""

    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    line: np.ndarray  # index of the source line of each segment
    name: np.ndarray  # object array: name of the source line, or None
    kind: np.ndarray  # object array: class of the source line (OSM highway=* value), or None
    weight: np.ndarray  # length × class weight, for sampling
    ward: np.ndarray  # 2025 ward index of the segment midpoint (-1 outside)
    n_wards: int
    synthetic: bool
    _by_ward: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _tree: shapely.STRtree | None = field(default=None, repr=False)

    def nearest(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the nearest segment to each lon/lat point."""
        if self._tree is None:
            ends = np.stack(
                [np.column_stack([self.x0, self.y0]), np.column_stack([self.x1, self.y1])], axis=1
            )
            self._tree = shapely.STRtree(shapely.linestrings(ends))
        return self._tree.query_nearest(shapely.points(x, y), all_matches=False)[1]

    @classmethod
    def from_lines(
        cls,
        lines: np.ndarray,
        names: np.ndarray,
        class_weight: np.ndarray,
        wards: Units,
        synthetic: bool,
        kinds: np.ndarray | None = None,
    ) -> Network:
        """Segments of lon/lat lines with per-line names, classes and class weights."""
        coords, line = shapely.get_coordinates(lines, return_index=True)
        same = line[1:] == line[:-1]
        a, b, line = coords[:-1][same], coords[1:][same], line[1:][same]
        length = distance_m(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
        ward = wards.locate((a[:, 0] + b[:, 0]) / 2, (a[:, 1] + b[:, 1]) / 2)
        kinds = (
            np.full(len(lines), None, dtype=object)
            if kinds is None
            else np.asarray(kinds, dtype=object)
        )
        return cls(
            a[:, 0],
            a[:, 1],
            b[:, 0],
            b[:, 1],
            line,
            np.asarray(names, dtype=object)[line],
            kinds[line],
            length * class_weight[line],
            ward,
            len(wards.geoms),
            synthetic,
        )

    def subset(self, mask: np.ndarray) -> Network:
        """The segments selected by a mask (e.g. named streets only)."""
        return Network(
            self.x0[mask],
            self.y0[mask],
            self.x1[mask],
            self.y1[mask],
            self.line[mask],
            self.name[mask],
            self.kind[mask],
            self.weight[mask],
            self.ward[mask],
            self.n_wards,
            self.synthetic,
        )

    def __len__(self) -> int:
        return len(self.x0)

    def length_m(self) -> np.ndarray:
        """Length of each segment in metres."""
        return distance_m(self.x0, self.y0, self.x1, self.y1)

    def ward_weight(self) -> np.ndarray:
        """Total sampling weight of the segments in each ward."""
        inside = self.ward >= 0
        return np.bincount(self.ward[inside], weights=self.weight[inside], minlength=self.n_wards)

    def pick_in_wards(self, wards: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One segment per requested ward, ∝ weight within the ward (ward must have segments)."""
        if self._by_ward is None:
            order = np.argsort(self.ward, kind="stable")
            order = order[self.ward[order] >= 0]
            cum = np.cumsum(self.weight[order])
            ends = np.bincount(self.ward[order], minlength=self.n_wards).cumsum()
            self._by_ward = (order, cum, ends)
        order, cum, ends = self._by_ward
        start = np.where(wards > 0, ends[np.maximum(wards - 1, 0)], 0)
        lo = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
        hi = cum[ends[wards] - 1]
        pos = lo + rng.random(len(wards)) * (hi - lo)
        return order[np.minimum(np.searchsorted(cum, pos, side="right"), len(order) - 1)]

    def pick(self, n: int, rng: np.random.Generator, mask: np.ndarray | None = None) -> np.ndarray:
        """Segments ∝ weight (optionally among a mask)."""
        weight = self.weight if mask is None else np.where(mask, self.weight, 0.0)
        cum = np.cumsum(weight)
        return np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(cum) - 1)

    def points_on(
        self, seg: np.ndarray, rng: np.random.Generator, offset_m: tuple[float, float] = (0, 0)
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points along segments, pushed sideways by a random offset; returns x, y, bearing."""
        t = rng.random(len(seg))
        x = self.x0[seg] + t * (self.x1[seg] - self.x0[seg])
        y = self.y0[seg] + t * (self.y1[seg] - self.y0[seg])
        dx = (self.x1[seg] - self.x0[seg]) * m_per_deg_lon(y)
        dy = (self.y1[seg] - self.y0[seg]) * M_PER_DEG_LAT
        bearing = np.arctan2(dy, dx)
        side = rng.choice([-1.0, 1.0], len(seg)) * rng.uniform(*offset_m, len(seg))
        x = x - side * np.sin(bearing) / m_per_deg_lon(y)
        y = y + side * np.cos(bearing) / M_PER_DEG_LAT
        return x, y, bearing
