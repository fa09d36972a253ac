"""Spatial queries against the seeded demo city: results checked against independent references
(geopandas in a metric CRS, direct SQL), plans checked for index use, the unit-membership cache
checked against the live join, derived layers and limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import psycopg2
import pytest

from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog, load_catalog
from ioc.db.connection import create_pool
from ioc.errors import Forbidden, InvalidParameter, LayerNotFound, QueryTimeout
from ioc.query import runner as query
from ioc.query import saved as derived
from ioc.query import saved_refresh, stats, units
from ioc.query.analysis import analyse
from ioc.query.model import QuerySettings, parse_query
from ioc.query.sql import build
from layers import registry

ANALYST = Principal(role="analyst", key_id=None)
CACHE_LAYER = "qtest_reports"
METRIC_CRS = "EPSG:9210"  # VN-2000 / TM-3 105°45': the city's own projected CRS


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    pool: Any
    catalog: Catalog

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def reload(self) -> None:
        self.catalog = self.run(load_catalog(self.pool))

    def answer(
        self,
        document: dict[str, Any],
        principal: Principal = ANALYST,
        settings: QuerySettings | None = None,
    ) -> tuple[bytes, query.Outcome]:
        async def go():
            answer = await query.run_query(
                self.pool,
                self.catalog,
                principal,
                parse_query(document),
                settings or QuerySettings(),
            )
            return b"".join([chunk async for chunk in answer.chunks]), answer.outcome

        return self.run(go())

    def features(self, document: dict[str, Any], **kw) -> list[dict[str, Any]]:
        body, _ = self.answer({**document, "format": "geojson"}, **kw)
        return json.loads(body)["features"]


@pytest.fixture(scope="module")
def env(db_settings) -> Iterator[Env]:
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(create_pool(db_settings))
    environment = Env(loop, pool, loop.run_until_complete(load_catalog(pool)))
    yield environment
    loop.run_until_complete(pool.close())
    loop.close()


def _ids(features: list[dict[str, Any]]) -> set[int]:
    return {f["id"] for f in features}


def _read(db, sql: str) -> gpd.GeoDataFrame:
    return gpd.read_postgis(sql, db, geom_col="geom", crs="EPSG:4326")


# --- spatial predicates against independent references -----------------------------------------


def test_schools_within_500_m_of_flood_points_match_geopandas(env, db):
    found = _ids(
        env.features(
            {
                "source": "schools",
                "properties": [],
                "geometry": False,
                "spatial": [{"op": "dwithin", "distance": 500, "layer": "flood_points"}],
            }
        )
    )
    schools = _read(db, "SELECT fid, geom FROM data.schools").to_crs(METRIC_CRS)
    floods = _read(db, "SELECT fid AS flood_fid, geom FROM data.flood_points").to_crs(METRIC_CRS)
    nearest = gpd.sjoin_nearest(schools, floods, how="left", distance_col="d")
    distance = nearest.groupby("fid")["d"].min()
    reference = set(distance[distance <= 500].index)
    # A projection is not the ellipsoid: tolerate disagreement within 0.5 m of the limit only.
    boundary = set(distance[(distance - 500).abs() < 0.5].index)
    assert len(reference) > 20, "the seed should put schools near flood points"
    assert found - boundary == reference - boundary
    assert len(boundary) <= 2


def test_nearest_hospitals_to_an_address_match_geopandas(env, db):
    with db.cursor() as cur:
        cur.execute("SELECT code FROM data.digital_addresses ORDER BY fid LIMIT 1 OFFSET 77")
        code = cur.fetchone()[0]
    found = env.features(
        {
            "source": "hospitals",
            "properties": ["name"],
            "spatial": [{"op": "nearest", "k": 5, "address": code}],
        }
    )
    hospitals = _read(db, "SELECT fid, geom FROM data.hospitals").to_crs(METRIC_CRS)
    point = (
        _read(db, f"SELECT geom FROM data.digital_addresses WHERE code = '{code}'")
        .to_crs(METRIC_CRS)
        .geometry.iloc[0]
    )
    ranked = hospitals.assign(d=hospitals.distance(point)).sort_values("d")
    assert [f["id"] for f in found] == list(ranked["fid"].iloc[:5])
    distances = [f["properties"]["distance_m"] for f in found]
    assert distances == sorted(distances)
    assert distances[0] == pytest.approx(ranked["d"].iloc[0], rel=1e-3)


def test_within_a_ward_matches_direct_sql(env, db):
    with db.cursor() as cur:
        cur.execute(
            "SELECT w.ward_code, count(t.fid) FROM data.wards w JOIN data.reports_1022 t"
            " ON ST_Intersects(w.geom, t.geom) GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        )
        ward, expected = cur.fetchone()
    body, outcome = env.answer(
        {
            "source": "reports_1022",
            "aggregates": [{"op": "count"}],
            "spatial": [{"op": "within", "ward": ward}],
        }
    )
    assert json.loads(body)["features"][0]["properties"]["count"] == expected


def test_permits_inside_a_geojson_polygon(env, db):
    polygon = {
        "type": "Polygon",
        "coordinates": [
            [[106.68, 10.76], [106.72, 10.76], [106.72, 10.80], [106.68, 10.80], [106.68, 10.76]]
        ],
    }
    found = _ids(
        env.features(
            {
                "source": "construction_permits",
                "properties": [],
                "spatial": [{"op": "intersects", "geometry": polygon}],
            }
        )
    )
    with db.cursor() as cur:
        cur.execute(
            "SELECT fid FROM data.construction_permits WHERE ST_Intersects(geom,"
            " ST_GeomFromGeoJSON(%s))",
            (json.dumps(polygon),),
        )
        expected = {row[0] for row in cur.fetchall()}
    assert expected and found == expected


def test_unknown_address_and_ward_are_400(env):
    for target in ({"address": "0000000001"}, {"ward": "99999999"}):
        with pytest.raises(InvalidParameter):
            env.answer({"source": "schools", "spatial": [{"op": "intersects", **target}]})


def test_within_distance_join_uses_the_gist_index(env):
    plan = env.run(
        query.explain_query(
            env.pool,
            env.catalog,
            ANALYST,
            parse_query(
                {
                    "source": "schools",
                    "spatial": [{"op": "dwithin", "distance": 500, "layer": "flood_points"}],
                }
            ),
            QuerySettings(),
        )
    )
    assert "Index Cond" in plan and "&&" in plan, plan
    assert "_geom_gist" in plan, plan


def test_nearest_uses_the_index_order(env):
    plan = env.run(
        query.explain_query(
            env.pool,
            env.catalog,
            ANALYST,
            parse_query(
                {
                    "source": "digital_addresses",
                    "spatial": [
                        {
                            "op": "nearest",
                            "k": 3,
                            "geometry": {"type": "Point", "coordinates": [106.7, 10.78]},
                        }
                    ],
                }
            ),
            QuerySettings(),
        )
    )
    assert "Order By: (geom <-> " in plan, plan


# --- grouping ------------------------------------------------------------------------------------


def test_time_buckets_are_city_months(env, db):
    rows = env.features(
        {"source": "reports_1022", "group_by": [{"time": "month"}], "aggregates": [{"op": "count"}]}
    )
    got = {r["properties"]["month"][:7]: r["properties"]["count"] for r in rows}
    with db.cursor() as cur:
        cur.execute(
            "SELECT to_char(date_trunc('month', reported_at, 'Asia/Ho_Chi_Minh')"
            " AT TIME ZONE 'Asia/Ho_Chi_Minh', 'YYYY-MM'), count(*)"
            " FROM data.reports_1022 GROUP BY 1"
        )
        expected = dict(cur.fetchall())
    assert got == expected
    assert rows[0]["properties"]["month"].endswith("+07:00")


def test_district_grouping_with_length_in_metres(env, db):
    rows = env.features(
        {
            "source": "planned_roads",
            "group_by": [{"district": "2024"}],
            "aggregates": [{"op": "length"}],
            "geometry": False,
        }
    )
    got = {r["properties"]["district_code"]: r["properties"]["length_m"] for r in rows}
    with db.cursor() as cur:
        cur.execute(
            "SELECT d.district_code, sum(ST_Length(ST_Intersection(t.geom, d.geom)"
            "::geography)) FROM data.districts_2024 d JOIN data.planned_roads t"
            " ON ST_Intersects(d.geom, t.geom) GROUP BY 1"
        )
        expected = dict(cur.fetchall())
    assert len(got) == 22
    for code, length in expected.items():
        assert got[code] == pytest.approx(length, rel=1e-9)


def test_attribute_group_with_order_and_limit(env, db):
    rows = env.features(
        {
            "source": "reports_1022",
            "group_by": [{"attribute": "category"}],
            "aggregates": [{"op": "count"}],
            "order_by": [{"key": "count", "desc": True}],
            "limit": 3,
        }
    )
    with db.cursor() as cur:
        cur.execute(
            "SELECT category, count(*) FROM data.reports_1022 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3"
        )
        expected = [list(r) for r in cur.fetchall()]
    assert [[r["properties"]["category"], r["properties"]["count"]] for r in rows] == expected


def _direct_counts(db, layer: str, units_table: str = "wards", where: str = "TRUE") -> dict:
    with db.cursor() as cur:
        cur.execute(
            f"SELECT w.ward_code, count(t.fid) FROM data.{units_table} w LEFT JOIN"
            f" data.{layer} t ON ST_Intersects(w.geom, t.geom) AND {where} GROUP BY 1"
        )
        return dict(cur.fetchall())


def test_stats_by_ward_equal_direct_counts(env, db):
    body, public = env.run(
        stats.by_ward(env.pool, env.catalog, ANALYST, "reports_1022", settings=QuerySettings())
    )
    doc = json.loads(body)
    got = {f["properties"]["ward_code"]: f["properties"]["value"] for f in doc["features"]}
    assert got == _direct_counts(db, "reports_1022")
    assert len(got) == 168 and not public


# --- the unit-membership cache -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_layer(env, db_settings) -> str:
    """A published copy of the reports, so that rows can be added and removed freely."""
    from layers.manifest import LayerManifest

    conn = psycopg2.connect(db_settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM ioc.layers WHERE id = %s", (CACHE_LAYER,))
            cur.execute(f"DROP TABLE IF EXISTS data.{CACHE_LAYER}")
        conn.commit()
        registry.create_layer(
            conn,
            LayerManifest.model_validate(
                {
                    "id": CACHE_LAYER,
                    "title": {"vi": "Thử", "en": "Test"},
                    "description": {"vi": "Thử", "en": "Test"},
                    "domain": "citizen_reports",
                    "department": "science_tech",
                    "geometry": {"type": "Point", "srid": 4326},
                    "access": "internal",
                    "cadence": "realtime",
                    "source": {"name": "pytest", "licence": "none"},
                    "time_attribute": "reported_at",
                    "zoom": {"min": 0, "max": 22},
                    "attributes": [
                        {"name": "category", "type": "text", "label": {"vi": "a", "en": "a"}},
                        {
                            "name": "reported_at",
                            "type": "timestamp",
                            "label": {"vi": "b", "en": "b"},
                        },
                    ],
                    "style": {
                        "color": "#000000",
                        "legend": [{"label": {"vi": "x", "en": "x"}, "color": "#000000"}],
                    },
                    "demo": {"count": 1, "weight": "uniform"},
                }
            ),
        )
        with conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO data.{CACHE_LAYER} (category, reported_at, geom)"
                " SELECT category, reported_at, geom FROM data.reports_1022 ORDER BY fid"
            )
        conn.commit()
        registry.refresh_stats(conn, CACHE_LAYER)
    finally:
        conn.close()
    env.reload()
    return CACHE_LAYER


def _ward_counts(env, layer: str, settings: QuerySettings, **params) -> dict[str, int]:
    body, _ = env.run(
        stats.by_ward(env.pool, env.catalog, ANALYST, layer, settings=settings, **params)
    )
    return {
        f["properties"]["ward_code"]: f["properties"]["value"] for f in json.loads(body)["features"]
    }


def test_cached_membership_equals_live_join(env, db, cache_layer):
    cached = QuerySettings(membership_min_features=1)
    layer, wards = env.catalog.get(cache_layer, ANALYST), env.catalog.get("wards", ANALYST)
    env.run(units.build(env.pool, layer, wards, 600_000))

    async def state():
        async with env.pool.acquire() as conn:
            return await units.cached_max_fid(conn, layer, wards)

    assert env.run(state()) is not None
    direct = _direct_counts(db, cache_layer)
    assert _ward_counts(env, cache_layer, cached) == direct
    where = "t.category = 'ngập nước'"
    assert _ward_counts(
        env, cache_layer, cached, filter="category = 'ngập nước'"
    ) == _direct_counts(db, cache_layer, where=where)

    # Rows added without a publish (a realtime feed) are joined live on top of the cache.
    with db.cursor() as cur:
        cur.execute(
            f"INSERT INTO data.{cache_layer} (category, reported_at, geom) SELECT"
            " category, reported_at, geom FROM data.reports_1022 ORDER BY fid LIMIT 500"
        )
    db.commit()
    assert env.run(state()) is not None
    assert _ward_counts(env, cache_layer, cached) == _direct_counts(db, cache_layer)

    # A deleted row invalidates the cache: the answer stays right (live join).
    with db.cursor() as cur:
        cur.execute(
            f"DELETE FROM data.{cache_layer} WHERE fid = (SELECT min(fid) FROM data.{cache_layer})"
        )
    db.commit()
    assert env.run(state()) is None
    assert _ward_counts(env, cache_layer, cached) == _direct_counts(db, cache_layer)

    # The runner's maintenance rebuilds it.
    env.run(units.request(env.pool, layer, wards))
    env.run(units.maintain(env.pool, env.catalog, max_age_s=3600, timeout_ms=600_000))
    assert env.run(state()) is not None
    assert _ward_counts(env, cache_layer, cached) == _direct_counts(db, cache_layer)


def test_cached_plan_skips_the_spatial_join(env, cache_layer):
    cached = QuerySettings(membership_min_features=1)
    doc = parse_query(
        {
            "source": cache_layer,
            "group_by": [{"ward": "current"}],
            "aggregates": [{"op": "count"}],
            "geometry": False,
        }
    )
    layer, wards = env.catalog.get(cache_layer, ANALYST), env.catalog.get("wards", ANALYST)
    env.run(units.build(env.pool, layer, wards, 600_000))
    plan = env.run(query.explain_query(env.pool, env.catalog, ANALYST, doc, cached))
    live = env.run(query.explain_query(env.pool, env.catalog, ANALYST, doc, QuerySettings()))
    assert "unit_members" in plan
    assert "unit_members" not in live and "st_intersects" in live.lower()


# --- limits --------------------------------------------------------------------------------------


def test_row_cap_truncates_and_explicit_limit_above_cap_is_refused(env):
    settings = QuerySettings(rows_analyst=50)
    body, outcome = env.answer(
        {"source": "digital_addresses", "geometry": False}, ANALYST, settings
    )
    doc = json.loads(body)
    assert outcome.truncated and doc["truncated"] and len(doc["features"]) == 50
    with pytest.raises(InvalidParameter) as error:
        env.answer({"source": "digital_addresses", "limit": 51}, ANALYST, settings)
    assert error.value.parameter == "limit"


def test_statement_timeout_per_role(env):
    settings = QuerySettings(timeout_analyst_s=0.2)
    heavy = {
        "source": "digital_addresses",
        "aggregates": [{"op": "count"}],
        "spatial": [{"op": "dwithin", "distance": 20000, "layer": "reports_1022"}],
    }
    with pytest.raises(QueryTimeout):
        env.answer(heavy, ANALYST, settings)


def test_unreadable_layers_are_not_found(env):
    anonymous = Principal()
    for document in (
        {"source": "reports_1022"},
        {
            "source": "schools",
            "spatial": [{"op": "dwithin", "distance": 10, "layer": "reports_1022"}],
        },
        {"source": "schools", "group_by": [{"ward": "2019"}]},
        {
            "source": "schools",
            "spatial": [{"op": "within", "ward": "26734", "ward_edition": "2019"}],
        },
    ):
        with pytest.raises(LayerNotFound) as hidden:
            env.answer(document, anonymous)
        with pytest.raises(LayerNotFound) as unknown:
            env.answer({**document, "source": "no_such_layer"}, anonymous)
        assert str(hidden.value).startswith("There is no layer")
        assert str(unknown.value).startswith("There is no layer")


def test_builder_sql_has_no_literal_values(env):
    marker = "Zq'x; DROP TABLE data.schools; --"
    escaped = marker.replace("'", "''")
    doc = parse_query(
        {
            "source": "construction_permits",
            "filter": f"address = '{escaped}'",
            "spatial": [
                {
                    "op": "dwithin",
                    "distance": 123.456,
                    "geometry": {"type": "Point", "coordinates": [106.7, 10.8]},
                }
            ],
            "from": "2025-01-01",
            "limit": 7,
            "offset": 3,
        }
    )
    plan = analyse(doc, env.catalog, ANALYST, 1000, QuerySettings())
    compiled = build(plan)
    assert "DROP" not in compiled.sql and "123.456" not in compiled.sql
    assert "2025" not in compiled.sql
    assert marker in compiled.args and 123.456 in compiled.args and 8 in compiled.args


# --- saved queries as derived layers ------------------------------------------------------------


@pytest.fixture
def analyst(db_settings) -> Principal:
    from ioc.catalog import keys

    conn = psycopg2.connect(db_settings.dsn())
    try:
        keys.create_key(conn, "analyst", label="pytest-query")
        with conn.cursor() as cur:
            cur.execute("SELECT max(id) FROM ioc.api_keys")
            key_id = cur.fetchone()[0]
    finally:
        conn.close()
    return Principal(role="analyst", key_id=key_id)


def _drop_derived(db, layer_id: str) -> None:
    with db.cursor() as cur:
        cur.execute("DELETE FROM ioc.layers WHERE id = %s", (layer_id,))
        cur.execute(f'DROP TABLE IF EXISTS data."{layer_id}"')
    db.commit()


def test_save_and_refresh_a_derived_layer(env, db, analyst):
    layer_id = "qtest_floods_by_ward"
    _drop_derived(db, layer_id)
    request = derived.parse_save(
        {
            "id": layer_id,
            "access": "internal",
            "every": "1h",
            "title": {"vi": "Phản ánh ngập theo phường", "en": "Flood reports by ward"},
            "query": {
                "source": "reports_1022",
                "filter": "category = 'ngập nước'",
                "group_by": [{"ward": "current"}],
                "aggregates": [{"op": "count"}],
            },
        }
    )
    settings = QuerySettings()
    with db.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM ioc.audit")
        audited = cur.fetchone()[0]
    db.commit()
    result = env.run(derived.save(env.pool, env.catalog, analyst, request, settings))
    assert result["feature_count"] == 168 and result["version"] == 1
    env.reload()
    layer = env.catalog.get(layer_id, analyst)
    assert layer.origin == "derived" and layer.access == "internal"
    assert [a.name for a in layer.attributes] == ["ward_code", "ward_name", "count"]
    assert layer.geometry_type == "MultiPolygon" and layer.srid == 4326
    with db.cursor() as cur:
        cur.execute(f'SELECT ward_code, count FROM data."{layer_id}"')
        stored = dict(cur.fetchall())
    assert stored == _direct_counts(db, "reports_1022", where="t.category = 'ngập nước'")

    refreshed = env.run(saved_refresh.refresh(env.pool, env.catalog, layer_id, settings, analyst))
    assert refreshed["version"] == 2
    with db.cursor() as cur:
        cur.execute(
            "SELECT action FROM ioc.audit WHERE layer_id = %s AND id > %s ORDER BY id",
            (layer_id, audited),
        )
        assert [r[0] for r in cur.fetchall()] == ["layer.derive", "layer.refresh"]
        # The scheduler refreshes due ones.
        cur.execute(
            "UPDATE ioc.saved_queries SET next_refresh_at = now() - interval '1 s'"
            " WHERE layer_id = %s",
            (layer_id,),
        )
    db.commit()
    assert env.run(saved_refresh.refresh_due(env.pool, env.catalog, settings)) >= 1
    env.reload()
    assert env.catalog.get(layer_id, analyst).version == 3
    _drop_derived(db, layer_id)


def test_derived_layer_cannot_be_more_open_than_its_sources(env, analyst):
    request = derived.parse_save(
        {
            "id": "qtest_leak",
            "access": "public",
            "title": {"vi": "x", "en": "x"},
            "query": {"source": "reports_1022", "geometry": True},
        }
    )
    with pytest.raises(InvalidParameter) as error:
        env.run(derived.save(env.pool, env.catalog, analyst, request, QuerySettings()))
    assert error.value.parameter == "access"
    restricted = derived.parse_save(
        {**request.model_dump(by_alias=True, exclude_none=True), "access": "restricted"}
    )
    with pytest.raises(Forbidden):
        env.run(derived.save(env.pool, env.catalog, analyst, restricted, QuerySettings()))


def test_quantiles_and_ranks():
    assert stats.ranks([5, None, 7, 5, 1]) == [2, None, 1, 2, 4]
    breaks = stats.quantile_breaks([float(v) for v in range(1, 11)])
    assert breaks == [1.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert [stats.class_of(v, breaks) for v in (1, 2, 3, 10)] == [0, 0, 1, 4]
