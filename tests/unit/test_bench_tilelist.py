"""The tile benchmark's list is drawn where the data is: a tile's share of the list follows its
share of the features, and every zoom gets the same number of tiles (issue #20: a benchmark
that cannot flatter with empty countryside tiles)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.tilelist import Sample, draw_tiles
from tiles.pmtiles import lonlat_to_tile

CORE = (106.70, 10.78)  # District 1
EDGE = (106.45, 10.60)  # Bình Chánh, far out


def _samples(n: int, core_share: float) -> list[Sample]:
    """n features in random order, core_share of them around the core, the rest at the edge."""
    rng = random.Random(7)
    out = []
    for k in range(n):
        lon, lat = CORE if rng.random() < core_share else EDGE
        out.append(Sample(k, lon + rng.uniform(-1e-4, 1e-4), lat + rng.uniform(-1e-4, 1e-4), None))
    return out


def test_every_zoom_equally_and_each_tile_holds_its_feature():
    samples = _samples(7 * 40, 0.5)
    tiles = draw_tiles(samples, range(10, 17), 40)
    assert Counter(z for z, _, _ in tiles) == {z: 40 for z in range(10, 17)}
    # Listed zoom by zoom, each tile the one that holds a sample of its own.
    for k, (z, x, y) in enumerate(tiles):
        s = samples[k]
        assert z == 10 + k // 40 and (x, y) == lonlat_to_tile(s.lon, s.lat, z)


def test_tiles_follow_the_features():
    samples = _samples(7 * 200, 0.9)
    tiles = draw_tiles(samples, range(10, 17), 200)
    for z in range(10, 17):
        core = lonlat_to_tile(*CORE, z)
        share = sum((x, y) == core for zz, x, y in tiles if zz == z) / 200
        assert 0.8 <= share <= 0.97  # ~90 % of the features, ~90 % of the tiles
    # The empty countryside between the two places is never drawn.
    edge = {lonlat_to_tile(*EDGE, z) for z in range(10, 17)}
    assert {(x, y) for _, x, y in tiles} <= {lonlat_to_tile(*CORE, z) for z in range(10, 17)} | edge


def test_too_few_samples_is_refused():
    with pytest.raises(ValueError, match="need as many samples"):
        draw_tiles(_samples(10, 0.5), range(10, 17), 2)
