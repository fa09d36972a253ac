"""Blocks of merged small polygons at the generalised zooms (issue 20, sql/0022), over HTTP.

A polygon layer of our own whose manifest says ``tiles: {merge: true}``: a few hundred
rectangles in three city blocks, their sizes spread below one pixel, between one and two and
above two at zooms 10-13, plus a few placed on purpose (a tied block, a block without
categories, a block at a tile's edge). Its tiles are decoded and held against the pixel rule of
docs/tiles.md ("Blocks"), computed here from the coordinates we generated: a member's box
rounded to whole pixels of the zoom, its cell the one of its north-west pixel, the block the
union of its members' boxes with their count and most frequent ``kind`` (ties: the least).
The same data in a layer without ``merge`` draws every visible feature alone.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, replace

import pytest
from shapely.affinity import affine_transform
from shapely.geometry import box, shape
from shapely.ops import unary_union

from tests.http.test_publish import _clean
from tests.http.test_tiles import EXTENT, R, decode, tile_of
from tests.http.test_tiles_lowzoom import KINDS, _manifest, _rows, _upload
from tiles.lowzoom import BUILD_SQL, build_args
from tiles.render import TileService
from tiles.settings import TileSettings

MERGED, PLAIN = "tblk_merged", "tblk_plain"
ZOOMS = (10, 11, 12, 13)
SETTINGS = TileSettings()
BUFFER_PX = SETTINGS.buffer / SETTINGS.extent * 256  # the MVT buffer, in pixels (4)
UNIT = EXTENT / 256  # tile units per pixel
BLOCK_PX = 16
PX13 = 2 * math.pi * R / (256 << 13)  # one pixel of z13, in EPSG:3857 metres
CENTRE = (106.70, 10.78)
_, X11, Y11 = tile_of(*CENTRE, 11)
ORIGIN = (X11 * 1024, Y11 * 1024)  # the z11 tile's north-west corner, in z13 pixels
# Where the random city blocks start (z13 pixels from ORIGIN): in three z13 tiles that are in
# three different z12 tiles, 60 pixels in from their edges, so each block lies well inside
# one tile at every zoom.
CLUSTERS = {"a": (60, 60), "b": (3 * 256 + 60, 256 + 60), "c": (256 + 60, 3 * 256 + 60)}
SPREAD = 56
# z13 sizes: under 1 px at z13; [1, 2) at z13, z12, z11, z10; 2 px at z10 and up.
SIZES = ((0.5, 0.95), (1.05, 1.95), (2.1, 3.9), (4.1, 7.9), (8.2, 15.8), (16.4, 30.0))
SIZE_WEIGHTS = (1, 2, 3, 2, 1, 1)
# No edge or size of ours is this close (in pixels of any zoom) to a rounding tie or a
# threshold: the round trip through WGS 84 cannot change what the rule says.
MARGIN = 0.02


@dataclass(frozen=True)
class Rect:
    """A rectangle in z13 pixels from the world's north-west corner (y down)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def scaled(self, z: int) -> tuple[float, float, float, float]:
        s = 2.0 ** (z - 13)
        return self.x0 * s, self.y0 * s, self.x1 * s, self.y1 * s

    def size(self, z: int) -> float:
        """The larger side in pixels of zoom z (the rule's greatest(width, height))."""
        x0, y0, x1, y1 = self.scaled(z)
        return max(x1 - x0, y1 - y0)

    def pixels(self, z: int) -> tuple[int, int, int, int]:
        """The box rounded to whole pixels of zoom z, at least one each way (sql/0022)."""
        x0, y0, x1, y1 = (round(v) for v in self.scaled(z))
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    def clear(self) -> bool:
        for z in ZOOMS:
            if any(abs(v % 1 - 0.5) < MARGIN for v in self.scaled(z)):
                return False
            if any(abs(self.size(z) - t) < MARGIN for t in (1.0, 2.0)):
                return False
        return True

    def moved(self, dx: float, dy: float = 0.0) -> Rect:
        return Rect(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)


@dataclass(frozen=True)
class Item:
    rect: Rect
    kind: str | None


def _lonlat(x: float, y: float) -> list[float]:
    mx, my = x * PX13 - math.pi * R, math.pi * R - y * PX13
    return [math.degrees(mx / R), math.degrees(2 * math.atan(math.exp(my / R)) - math.pi / 2)]


def _feature(name: str, item: Item) -> dict:
    r = item.rect
    ring = [_lonlat(x, y) for x, y in ((r.x0, r.y1), (r.x1, r.y1), (r.x1, r.y0), (r.x0, r.y0))]
    return {
        "type": "Feature",
        "properties": {"name": name, "kind": item.kind},
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
    }


def _at(dx: float, dy: float, w: float, h: float) -> Rect:
    rect = Rect(ORIGIN[0] + dx, ORIGIN[1] + dy, ORIGIN[0] + dx + w, ORIGIN[1] + dy + h)
    assert rect.clear(), rect
    return rect


def _random_block(rnd: random.Random, prefix: str, at: tuple[int, int], n: int) -> dict:
    items = {}
    for k in range(n):
        while True:
            lo, hi = rnd.choices(SIZES, SIZE_WEIGHTS)[0]
            side, other = rnd.uniform(lo, hi), rnd.uniform(0.3, lo)
            w, h = (side, other) if rnd.random() < 0.5 else (other, side)
            x, y = at[0] + rnd.uniform(0, SPREAD), at[1] + rnd.uniform(0, SPREAD)
            rect = Rect(ORIGIN[0] + x, ORIGIN[1] + y, ORIGIN[0] + x + w, ORIGIN[1] + y + h)
            if rect.clear():
                break
        kind = rnd.choices((*KINDS, None), weights=(3, 3, 3, 1))[0]
        items[f"{prefix}{k}"] = Item(rect, kind)
    return items


# Placed on purpose, in quarters of a z13 pixel (exact in binary, clear of rounding ties at
# z10-13), 2.5 z13 px wide (merged at z12 only): five members of one z12 cell whose kinds tie
# (ngap 2, rac 2, one without: the block says ngap, the least) and two members of another
# cell without a kind. Near the east edge of the z12 tile south-east of the random blocks,
# three members of one z12 cell (den 2, rac 1), 1.25 z12 px wide: the easternmost reaches
# into the next tile's 4-pixel buffer, the westernmost is 13 pixels from that tile.
TIED = {
    f"tie{i}": Item(_at(140.25 + 3 * i, 70.25, 2.5, 2.5), kind)
    for i, kind in enumerate(("ngap", "rac", "rac", "ngap", None))
}
NO_KIND = {f"none{i}": Item(_at(140.25 + 3 * i, 100.25, 2.5, 2.5), None) for i in range(2)}
EDGE_Y = 512 + 2 * 100.125  # z13 px from ORIGIN: row 100 of the z12 tile
EDGE = {
    "edge_w": Item(_at(512 + 2 * 241.125, EDGE_Y, 2 * 1.25, 2), "den"),
    "edge_m": Item(_at(512 + 2 * 244.125, EDGE_Y, 2 * 1.25, 2), "den"),
    "edge_e": Item(_at(512 + 2 * 252.625, EDGE_Y, 2 * 1.25, 2), "rac"),
}
EDGE_TILE = (12, 2 * X11 + 1, 2 * Y11 + 1)
NEXT_TILE = (12, 2 * X11 + 2, 2 * Y11 + 1)  # shows the edge block only through its buffer


def _initial() -> dict[str, Item]:
    rnd = random.Random(20)
    items = {}
    for prefix, at in CLUSTERS.items():
        items |= _random_block(rnd, prefix, at, 80)
    return items | TIED | NO_KIND | EDGE


INITIAL = _initial()


# --- what the rules say -------------------------------------------------------------------------


@dataclass
class Block:
    n: int
    kind: str | None
    geom: object  # shapely, in the tile's units (y down), clipped to the buffered tile


def _mode(kinds: list[str | None]) -> str | None:
    """The most frequent non-null value, ties broken by the least (the database's C order)."""
    counts = Counter(k for k in kinds if k is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min(k for k, c in counts.items() if c == top)


def _blocks(items: dict[str, Item], z: int) -> dict[tuple[int, int], list[str]]:
    """The merged features of zoom z by cell (16-pixel cells of their north-west pixel)."""
    cells: dict[tuple[int, int], list[str]] = {}
    for name, item in items.items():
        if 1 <= item.rect.size(z) < 2:
            x0, y0, _, _ = item.rect.pixels(z)
            cells.setdefault((x0 // BLOCK_PX, y0 // BLOCK_PX), []).append(name)
    return cells


def _buffered(z: int, x: int, y: int):
    """The buffered tile, in z pixels of the world."""
    return box(x * 256 - BUFFER_PX, y * 256 - BUFFER_PX, (x + 1) * 256 + BUFFER_PX,
               (y + 1) * 256 + BUFFER_PX)  # fmt: skip


def _to_units(geom, x: int, y: int):
    return affine_transform(geom, [UNIT, 0, 0, UNIT, -x * 256 * UNIT, -y * 256 * UNIT])


@dataclass
class Expected:
    shapes: set[str]  # names of the features drawn alone
    blocks: list[Block]


def expected_tile(items: dict[str, Item], z: int, x: int, y: int, merge: bool) -> Expected:
    """What the tile (z, x, y) of the layer holds by the rules, from our own coordinates."""
    area = _buffered(z, x, y)
    alone = 2 if merge else 1
    shapes = {
        name
        for name, item in items.items()
        if item.rect.size(z) >= alone and box(*item.rect.scaled(z)).intersects(area)
    }
    blocks = []
    for names in (_blocks(items, z) if merge else {}).values():
        union = unary_union([box(*items[n].rect.pixels(z)) for n in names])
        assert not union.touches(area), "a block touching the buffer's edge: move it"
        if union.intersects(area):
            kind = _mode([items[n].kind for n in names])
            blocks.append(Block(len(names), kind, _to_units(union.intersection(area), x, y)))
    return Expected(shapes, blocks)


# --- fixtures and reading ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def publisher(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}


@pytest.fixture
def uncached(tiles_client):
    """The app with tile caching off: every request renders."""
    tiles_client.app.state.tiles = TileService(TileSettings(cache="off"))
    return tiles_client


@pytest.fixture(scope="module")
def state(client, publisher, db_settings):
    """Both layers published with INITIAL; the merged layer's current items (tests that write
    keep it up to date)."""
    _clean(db_settings, "tblk")
    for layer_id, tiles in ((MERGED, {"merge": True}), (PLAIN, {})):
        manifest = _manifest(layer_id, "Polygon", tiles=tiles)
        response = client.post("/layers", json=manifest, headers=publisher)
        assert response.status_code == 201, response.text
        features = [_feature(name, item) for name, item in INITIAL.items()]
        _upload(client, "put", layer_id, features, publisher)
    yield dict(INITIAL)
    _clean(db_settings, "tblk")


def _fids(db, layer: str) -> dict[str, int]:
    return dict(_rows(db, f"SELECT name, fid FROM data.{layer}"))


def _tile(client, layer: str, z: int, x: int, y: int) -> list[dict]:
    response = client.get(f"/tiles/{layer}/{z}/{x}/{y}.pbf")
    if response.status_code == 204:
        return []
    return decode(response)[layer]["features"]


def _tiles(items: dict[str, Item], z: int) -> set[tuple[int, int, int]]:
    """The tiles of zoom z holding a corner of a feature, and the edge block's neighbour."""
    tiles = {NEXT_TILE} if z == 12 else set()
    for item in items.values():
        for px, py in ((item.rect.x0, item.rect.y0), (item.rect.x1, item.rect.y1)):
            s = 2.0 ** (z - 13) / 256
            tiles.add((z, int(px * s), int(py * s)))
    return tiles


def _assert_tile(client, db, items: dict[str, Item], tile: tuple[int, int, int]) -> list[Block]:
    """The merged layer's tile holds exactly the expected shapes (by id and name) and blocks
    (geometry to a unit², count, kind, no id, no other property); the blocks found."""
    features = _tile(client, MERGED, *tile)
    want = expected_tile(items, *tile, merge=True)
    fids = _fids(db, MERGED)
    shapes = [f for f in features if f["id"]]
    assert {f["properties"]["name"] for f in shapes} == want.shapes, tile
    assert {f["id"] for f in shapes} == {fids[n] for n in want.shapes}, tile
    assert all("count" not in f["properties"] for f in shapes), tile
    blocks = []
    for f in features:
        if f["id"]:
            continue
        assert set(f["properties"]) <= {"count", "kind"}, f["properties"]
        got = shape(f["geometry"])
        match = [b for b in want.blocks if b.geom.symmetric_difference(got).area < 1]
        assert len(match) == 1, (tile, f)
        assert f["properties"]["count"] == match[0].n, (tile, f)
        assert f["properties"].get("kind") == match[0].kind, (tile, f)
        blocks.append(match[0])
    assert len(blocks) == len(want.blocks), tile
    return blocks


def _assert_tiles(client, db, items: dict[str, Item]) -> None:
    """Every tile of zooms 10-13 our features touch is what the rules say."""
    for z in ZOOMS:
        blocks = []
        for tile in sorted(_tiles(items, z)):
            blocks += _assert_tile(client, db, items, tile)
        # Each block is drawn in one tile, or two (the edge block at z12): all were checked.
        assert len(blocks) >= len(_blocks(items, z)) >= 3, z


# --- tests ---------------------------------------------------------------------------------------


def test_the_data_spreads_over_the_three_classes(state):
    """Our own check that the fixture tests what it means to: at each zoom, features under one
    pixel, merged ones (in blocks of several) and larger ones."""
    for z in ZOOMS:
        sizes = Counter(
            "absent" if i.rect.size(z) < 1 else "merged" if i.rect.size(z) < 2 else "alone"
            for i in INITIAL.values()
        )
        assert min(sizes.values()) >= 15, (z, sizes)
        assert max(len(names) for names in _blocks(INITIAL, z).values()) >= 3, z


def test_blocks_count_the_merged_features_of_the_tile(state, uncached, db):
    """At z10-13 each tile draws the features of 2 px and more alone (with their ids), one
    block per cell of the merged ones (no id, count, kind) and nothing of the smaller ones;
    in the tile of each random city block the counts sum to its merged features."""
    _assert_tiles(uncached, db, state)
    for z in ZOOMS:
        for prefix, (dx, dy) in CLUSTERS.items():
            s = 2.0 ** (z - 13) / 256
            tile = (z, int((ORIGIN[0] + dx) * s), int((ORIGIN[1] + dy) * s))
            features = _tile(uncached, MERGED, *tile)
            counts = sum(f["properties"].get("count", 0) for f in features)
            in_tile = [n for n, i in state.items() if 1 <= i.rect.size(z) < 2
                       and tile_of(*_lonlat(i.rect.x0, i.rect.y0), z) == tile]  # fmt: skip
            assert counts == len(in_tile) > 0, (tile, prefix)
            absent = {n for n, i in state.items() if i.rect.size(z) < 1}
            assert not absent & {f["properties"].get("name") for f in features}


def test_a_tied_block_takes_the_least_kind(state, uncached):
    """The five members of one z12 cell: ngap 2, rac 2, one without a kind: one block of 5
    that says ngap; the two members without a kind: a block without one."""
    x0, y0, *_ = TIED["tie0"].rect.pixels(12)
    features = _tile(uncached, MERGED, 12, x0 // 256, y0 // 256)
    blocks = sorted(
        (f["properties"]["count"], f["properties"].get("kind"))
        for f in features
        if f["id"] == 0 and f["properties"]["count"] in (2, 5)
    )
    assert (5, "ngap") in blocks and (2, None) in blocks


def test_a_layer_without_merge_draws_every_visible_feature_alone(state, uncached, db):
    fids = _fids(db, PLAIN)
    for z in ZOOMS:
        for tile in sorted(_tiles(INITIAL, z)):
            features = _tile(uncached, PLAIN, *tile)
            want = expected_tile(INITIAL, *tile, merge=False).shapes
            assert {f["properties"]["name"] for f in features} == want, tile
            assert {f["id"] for f in features} == {fids[n] for n in want}, tile
            assert not [f for f in features if "count" in f["properties"]], tile


def test_tilejson_lists_count_for_the_merging_layer_only(state, uncached):
    fields = {}
    for layer in (MERGED, PLAIN):
        doc = uncached.get(f"/collections/{layer}/tiles/WebMercatorQuad/tilejson.json").json()
        (vector_layer,) = doc["vector_layers"]
        fields[layer] = vector_layer["fields"]
    assert fields[MERGED] == {**fields[PLAIN], "count": "Number"}
    assert "count" not in fields[PLAIN]


def _flip(items: dict[str, Item], z: int) -> tuple[str, str]:
    """A merged member of zoom z and a kind that changes its block's kind."""
    for names in _blocks(items, z).values():
        kinds = [items[n].kind for n in names]
        for i, name in enumerate(names):
            for kind in KINDS:
                if _mode([*kinds[:i], kind, *kinds[i + 1 :]]) != _mode(kinds):
                    return name, kind
    raise AssertionError("no block whose kind one write flips")


def _assert_blocks_as_built(db, layer: str) -> None:
    """ioc.tile_blocks and ioc.tile_merged kept by the triggers equal a fresh build's."""
    with db.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE kept_blocks ON COMMIT DROP AS SELECT z, cx, cy, n, c, geom"
            " FROM ioc.tile_blocks WHERE layer_id = %s",
            (layer,),
        )
        cur.execute(
            "CREATE TEMP TABLE kept_merged ON COMMIT DROP AS SELECT z, fid, cx, cy, x0, y0,"
            " x1, y1, c FROM ioc.tile_merged WHERE layer_id = %s",
            (layer,),
        )
        cur.execute("SELECT count(*) FROM kept_blocks")
        assert cur.fetchone()[0] > 20
        cur.execute(BUILD_SQL, build_args(layer, SETTINGS))
        cur.execute(
            "SELECT coalesce(k.z, b.z), coalesce(k.cx, b.cx), coalesce(k.cy, b.cy), k.n, b.n,"
            " k.c, b.c FROM kept_blocks k FULL JOIN (SELECT * FROM ioc.tile_blocks"
            " WHERE layer_id = %s) b USING (z, cx, cy) WHERE k.n IS DISTINCT FROM b.n"
            " OR k.c IS DISTINCT FROM b.c OR NOT coalesce(ST_Equals(k.geom, b.geom), false)",
            (layer,),
        )
        differ = cur.fetchall()
        cur.execute(
            "(SELECT * FROM kept_merged EXCEPT ALL SELECT z, fid, cx, cy, x0, y0, x1, y1, c"
            " FROM ioc.tile_merged WHERE layer_id = %s) UNION ALL (SELECT z, fid, cx, cy, x0,"
            " y0, x1, y1, c FROM ioc.tile_merged WHERE layer_id = %s EXCEPT ALL"
            " SELECT * FROM kept_merged)",
            (layer, layer),
        )
        merged = cur.fetchall()
    db.rollback()
    assert differ == [] and merged == []


def test_blocks_follow_item_writes(state, uncached, db, publisher):
    """A kind that flips a block's kind, a move to another cell, a delete and a create through
    the items API: the tiles say what the rules say of the new data, and the tables the
    triggers kept are what a fresh build gives."""
    items = f"/collections/{MERGED}/items"
    fids = _fids(db, MERGED)
    blocks_before = {z: _blocks(state, z) for z in ZOOMS}

    name, kind = _flip(state, 12)
    response = uncached.patch(f"{items}/{fids[name]}", json={"properties": {"kind": kind}},
                              headers=publisher)  # fmt: skip
    assert response.status_code == 204, response.text
    state[name] = replace(state[name], kind=kind)

    mover = next(n for n in sorted(state) if n.startswith("b") and 1 <= state[n].rect.size(12) < 2)
    moved = replace(state[mover], rect=state[mover].rect.moved(35))
    assert moved.rect.pixels(12)[0] // BLOCK_PX != state[mover].rect.pixels(12)[0] // BLOCK_PX
    geometry = _feature(mover, moved)["geometry"]
    response = uncached.patch(f"{items}/{fids[mover]}", json={"geometry": geometry},
                              headers=publisher)  # fmt: skip
    assert response.status_code == 204, response.text
    state[mover] = moved

    gone = next(n for n in sorted(state) if n.startswith("c") and 1 <= state[n].rect.size(13) < 2)
    assert uncached.delete(f"{items}/{fids[gone]}", headers=publisher).status_code == 204
    del state[gone]

    new = Item(_at(60.25, 130.25, 1.5, 1.0), "den")  # merged at z13, in city block a's tile
    response = uncached.post(items, json=_feature("new", new), headers=publisher)
    assert response.status_code == 201, response.text
    state["new"] = new

    assert len(_rows(db, f"SELECT fid FROM data.{MERGED}")) == len(state)
    assert {z: _blocks(state, z) for z in ZOOMS} != blocks_before
    _assert_tiles(uncached, db, state)
    _assert_blocks_as_built(db, MERGED)


def test_blocks_follow_bulk_statements_and_appends(state, uncached, db, publisher):
    """Whoever writes, the statement triggers keep the blocks: one UPDATE of many kinds, one
    that moves a whole city block 35 z13 pixels east (every cell of it changes), one DELETE of
    several rows, and an appending upload."""
    rnd = random.Random(22)
    kinds = {n: rnd.choice(KINDS) for n in sorted(state) if n[0] in "ab" and rnd.random() < 0.4}
    city_c = sorted(n for n in state if n.startswith("c"))
    gone = [n for n in sorted(state) if n[0] in "ab" and n not in kinds][::5]
    shift = math.degrees(35 * PX13 / R)  # 35 z13 pixels of longitude, exactly, in Mercator
    with db.cursor() as cur:
        cur.execute(
            f"UPDATE data.{MERGED} t SET kind = v.kind FROM unnest(%s::text[], %s::text[])"
            " AS v(name, kind) WHERE t.name = v.name",
            (list(kinds), list(kinds.values())),
        )
        cur.execute(
            f"UPDATE data.{MERGED} SET geom = ST_Translate(geom, %s, 0) WHERE name = ANY(%s)",
            (shift, city_c),
        )
        cur.execute(f"DELETE FROM data.{MERGED} WHERE name = ANY(%s)", (gone,))
    db.commit()
    for name, kind in kinds.items():
        state[name] = replace(state[name], kind=kind)
    for name in city_c:
        state[name] = replace(state[name], rect=state[name].rect.moved(35))
    for name in gone:
        del state[name]
    added = _random_block(random.Random(23), "d", CLUSTERS["a"], 30)
    _upload(uncached, "post", MERGED, [_feature(n, i) for n, i in added.items()], publisher)
    state.update(added)

    assert len(_rows(db, f"SELECT fid FROM data.{MERGED}")) == len(state)
    _assert_tiles(uncached, db, state)
    _assert_blocks_as_built(db, MERGED)


def _rendered_then_kept(client, urls: dict[str, str]) -> dict:
    """Each tile rendered on first ask, then served from memory: the second answers."""
    kept = {}
    for name, url in urls.items():
        assert client.get(url).headers["x-tile-cache"] == "database", name
        kept[name] = client.get(url)
        assert kept[name].headers["x-tile-cache"] == "memory", name
    return kept


def test_a_write_re_renders_the_tiles_its_block_reaches(state, client, db, publisher, tmp_path):
    """Cache on: the kind of the edge block's westernmost member, 13 pixels from the next
    tile (beyond its 4-pixel buffer), flips the block's kind. The next tile, which shows the
    block only through its buffer, is rendered again and says the new kind; a far tile stays
    in memory with its ETag."""
    app = client.app.state
    own = app.tiles
    app.tiles = TileService(TileSettings(cache_dir=tmp_path, debug_headers=True))
    try:
        client.portal.call(app.reload_catalog, set())  # the service reads the events' state
        x, y = tile_of(*_lonlat(ORIGIN[0] + 60, ORIGIN[1] + 60), 12)[1:]
        urls = {
            name: "/tiles/{}/{}/{}/{}.pbf".format(MERGED, *tile)
            for name, tile in (("edge", EDGE_TILE), ("next", NEXT_TILE), ("far", (12, x, y)))
        }
        before = _rendered_then_kept(client, urls)
        (block,) = decode(before["next"])[MERGED]["features"]
        assert block["id"] == 0 and block["properties"] == {"count": 3, "kind": "den"}

        fid = _fids(db, MERGED)["edge_w"]
        response = client.patch(f"/collections/{MERGED}/items/{fid}",
                                json={"properties": {"kind": "rac"}}, headers=publisher)  # fmt: skip
        assert response.status_code == 204, response.text
        state["edge_w"] = replace(state["edge_w"], kind="rac")

        after = client.get(urls["next"])
        assert after.headers["x-tile-cache"] == "database"
        (block,) = decode(after)[MERGED]["features"]
        assert block["properties"] == {"count": 3, "kind": "rac"}
        assert client.get(urls["edge"]).headers["x-tile-cache"] == "database"
        far = client.get(urls["far"])
        assert far.headers["x-tile-cache"] == "memory"
        assert far.headers["etag"] == before["far"].headers["etag"]
    finally:
        app.tiles = own


def test_a_layer_without_merge_keeps_the_plain_reach(client, db, publisher, tmp_path):
    """Cache on: the same write to the layer that does not merge reaches only its own box and
    the render's buffer, so the next tile (13 pixels away) stays in memory; the tile holding
    the feature is rendered again."""
    app = client.app.state
    own = app.tiles
    app.tiles = TileService(TileSettings(cache_dir=tmp_path, debug_headers=True))
    try:
        client.portal.call(app.reload_catalog, set())
        urls = {
            name: "/tiles/{}/{}/{}/{}.pbf".format(PLAIN, *tile)
            for name, tile in (("edge", EDGE_TILE), ("next", NEXT_TILE))
        }
        before = _rendered_then_kept(client, urls)

        fid = _fids(db, PLAIN)["edge_w"]
        response = client.patch(f"/collections/{PLAIN}/items/{fid}",
                                json={"properties": {"kind": "rac"}}, headers=publisher)  # fmt: skip
        assert response.status_code == 204, response.text

        assert client.get(urls["edge"]).headers["x-tile-cache"] == "database"
        after = client.get(urls["next"])
        assert after.headers["x-tile-cache"] == "memory"
        assert after.headers["etag"] == before["next"].headers["etag"]
    finally:
        app.tiles = own
