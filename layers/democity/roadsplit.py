"""Cutting the street network into road segments of about equal length (vectorised)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import shapely

from layers.democity.admin import is_old_hcmc
from layers.democity.context import CityContext, Network
from layers.democity.synth import RawBatch, chunk_sizes
from layers.manifest import LayerManifest

# OSM highway=* classes in the Vietnamese road classes of the catalog.
CLASS_VI = {
    "motorway": "cao tốc",
    "trunk": "quốc lộ",
    "primary": "đường đô thị chính",
    "secondary": "đường đô thị chính",
    "tertiary": "đường đô thị thứ yếu",
    "residential": "đường khu vực",
    "unclassified": "đường khu vực",
    "living_street": "đường khu vực",
    "service": "đường nội bộ",
}
LANES = {"motorway": 6, "trunk": 6, "primary": 4, "secondary": 4, "tertiary": 2}
SPEED = {"motorway": 80, "trunk": 60, "primary": 50, "secondary": 50, "tertiary": 40}


def pieces(net: Network, piece_m: float) -> np.ndarray:
    """Piece number of each segment when every line is cut every ``piece_m`` metres (at vertices)."""
    length = net.length_m()
    n = len(length)
    new_line = np.r_[True, net.line[1:] != net.line[:-1]]
    cum = np.cumsum(length)
    first = np.maximum.accumulate(np.where(new_line, np.arange(n), 0))
    before = cum - length - (cum[first] - length[first])
    bucket = np.floor(before / piece_m)
    new_piece = new_line | np.r_[True, bucket[1:] != bucket[:-1]]
    return np.cumsum(new_piece) - 1


def cut_length(net: Network, total: int, longest: float = 800.0) -> float:
    """The longest cut length (at most a city block or so) that still yields at least
    ``total`` pieces (bisection)."""
    lo, hi = 15.0, longest
    if pieces(net, lo)[-1] + 1 < total:
        return lo
    if pieces(net, hi)[-1] + 1 >= total:
        return hi
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pieces(net, mid)[-1] + 1 >= total else (lo, mid)
    return lo


def piece_lines(
    net: Network, piece: np.ndarray, chosen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Linestrings of the chosen pieces (sorted ids) and the first segment of each."""
    rows = np.flatnonzero(np.isin(piece, chosen))
    p = piece[rows]
    is_last = np.r_[p[1:] != p[:-1], True]
    pos = np.arange(len(rows)) + np.cumsum(is_last) - is_last
    size = len(rows) + int(is_last.sum())
    x, y, index = np.empty(size), np.empty(size), np.empty(size, dtype=np.int64)
    rank = np.searchsorted(chosen, p)
    x[pos], y[pos], index[pos] = net.x0[rows], net.y0[rows], rank
    end = pos[is_last] + 1
    x[end], y[end], index[end] = net.x1[rows[is_last]], net.y1[rows[is_last]], rank[is_last]
    first = rows[np.r_[True, p[1:] != p[:-1]]]
    return shapely.linestrings(x, y, indices=index), first


def road_segment_batches(
    ctx: CityContext, m: LayerManifest, rng: np.random.Generator, total: int
) -> Iterator[RawBatch]:
    """``total`` road segments, busier and more central roads more likely to be included."""
    net = ctx.roads
    piece = pieces(net, cut_length(net, total))
    n_pieces = int(piece[-1]) + 1
    core = is_old_hcmc(ctx.wards.table["ward_code"])
    seg_weight = net.weight * np.where(
        net.ward >= 0, np.where(core[np.maximum(net.ward, 0)], 1.0, 0.3), 0.05
    )
    weight = np.bincount(piece, weights=seg_weight, minlength=n_pieces) + 1e-9
    if n_pieces > total:
        chosen = np.sort(rng.choice(n_pieces, total, replace=False, p=weight / weight.sum()))
    else:
        chosen = np.arange(n_pieces)
    lines, first = piece_lines(net, piece, chosen)
    kind = net.kind[first]
    known: dict[str, object] = {}
    for a in m.attributes:
        if re.search(r"name|street", a.name) and a.type == "text":
            known[a.name] = net.name[first]  # unnamed OSM ways: filled when required
        elif re.search(r"highway|class|road_type|category", a.name) and a.type == "text":
            if a.values is None:
                known[a.name] = kind
            else:
                values = [str(v) for v in a.values]
                fallback = "hẻm" if "hẻm" in values else values[-1]
                match = [k if k in values else CLASS_VI.get(k, fallback) for k in kind]
                known[a.name] = np.array(
                    [v if v in values else fallback for v in match], dtype=object
                )
        elif re.search(r"lanes", a.name) and a.type in ("integer", "number"):
            known[a.name] = np.array(
                [LANES.get(k, 1 if k == "service" else 2) for k in kind], dtype=float
            )
        elif re.search(r"width", a.name) and a.type in ("integer", "number"):
            lanes = np.array([LANES.get(k, 1 if k == "service" else 2) for k in kind], dtype=float)
            known[a.name] = np.round(lanes * 3.5 + rng.uniform(1, 6, len(kind)), 1)
        elif (
            re.search(r"max_?speed|speed_limit", a.name)
            and a.type in ("integer", "number")
            and not a.values
        ):
            known[a.name] = np.array([SPEED.get(k, 30) for k in kind], dtype=float)
    start = 0
    for n in chunk_sizes(len(lines)):
        part = slice(start, start + n)
        ward = net.ward[first[part]]
        yield RawBatch(
            lines[part],
            {k: np.asarray(v)[part] for k, v in known.items()},
            np.where(ward >= 0, ward, 0) if (ward >= 0).all() else None,
            net.name[first[part]],
        )
        start += n
