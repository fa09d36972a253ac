"""CQL2 → SQL: catalog-quoted identifiers, bound values, 400 for everything unknown."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime

import pytest
import shapely

from ioc.catalog.layers import layer_from_row
from ioc.errors import InvalidParameter
from ioc.features import crs
from ioc.features.binds import Binds
from ioc.features.cql2 import parse_filter
from ioc.features.cql2_sql import compile_filter

ATTRIBUTES = [
    ("name", "text"),
    ("n", "integer"),
    ("value", "number"),
    ("ok", "boolean"),
    ("day", "date"),
    ("observed_at", "timestamp"),
    ("Mixed Case", "integer"),
    ("has space", "text"),
]


def make_layer(srid: int = 4326):
    manifest = {
        "attributes": [{"name": n, "type": t} for n, t in ATTRIBUTES],
        "time_attribute": "observed_at",
    }
    return layer_from_row(
        {
            "id": "demo",
            "schema_name": "data",
            "table_name": "demo",
            "geometry_column": "geom",
            "id_column": "fid",
            "geometry_type": "Point",
            "srid": srid,
            "title_vi": "Demo",
            "title_en": "Demo",
            "description_vi": "",
            "description_en": "",
            "domain": "test",
            "department": "test",
            "access": "public",
            "cadence": "static",
            "origin": "registered",
            "manifest": manifest,
            "metadata": {},
            "feature_count": 0,
            "extent": None,
            "version": 1,
            "last_update": None,
        }
    )


LAYER = make_layer()


def sql_of(text: str, lang: str = "cql2-text", layer=LAYER, filter_crs=crs.CRS84):
    binds = Binds()
    sql = compile_filter(parse_filter(text, lang), layer, binds, filter_crs)
    placeholders = {int(n) for n in re.findall(r"\$(\d+)", sql)}
    # every value bound, every bound value used
    assert placeholders == set(range(1, len(binds.values) + 1)), (sql, binds.values)
    return sql, binds.values


def test_comparison_binds_typed_values():
    sql, values = sql_of("name = 'Bến Thành' AND n > 5 AND value <= 2.5 AND ok = TRUE")
    assert sql == (
        '((((t."name"::text = $1::text) AND (t."n" > $2::bigint)) AND '
        '(t."value" <= $3::double precision)) AND (t."ok" = $4::boolean))'
    )
    assert values == ["Bến Thành", 5, 2.5, True]


def test_injection_stays_in_the_bound_value():
    payload = "x'); DROP TABLE data.demo; --"
    sql, values = sql_of("name = '" + payload.replace("'", "''") + "'")
    assert "DROP" not in sql and values == [payload]


def test_quoted_property_names_are_quoted_identifiers():
    sql, values = sql_of('"Mixed Case" = 1 AND "has space" LIKE \'a%\'')
    assert 't."Mixed Case" = $1::bigint' in sql and 't."has space"::text LIKE $2::text' in sql


@pytest.mark.parametrize(
    "text",
    [
        "nope = 1",
        '"n; DROP TABLE x" = 1',
        "S_INTERSECTS(other, POINT(1 2))",
        "T_AFTER(missing, TIMESTAMP('2024-01-01T00:00:00Z'))",
        "sortme IN (1, 2)",
    ],
)
def test_unknown_property_is_400(text):
    with pytest.raises(InvalidParameter) as err:
        sql_of(text)
    assert err.value.parameter == "filter" and "Unknown property" in err.value.message


@pytest.mark.parametrize(
    "text, lang",
    [
        ("name = ", "cql2-text"),
        ("((", "cql2-text"),
        ("name ~ 'x'", "cql2-text"),
        ('{"op": "=", "args": [}', "cql2-json"),
        ('{"op": "nope", "args": [1, 2]}', "cql2-json"),
        ('{"op": "and", "args": []}', "cql2-json"),
        ("[]", "cql2-json"),
        ("x" * 30_000, "cql2-text"),
    ],
)
def test_malformed_filter_is_400(text, lang):
    with pytest.raises(InvalidParameter) as err:
        sql_of(text, lang)
    assert err.value.parameter == "filter"


@pytest.mark.parametrize(
    "text",
    [
        "n + 1 = 2",
        "FOO(name) = 'x'",
        "T_MEETS(observed_at, INTERVAL('2024-01-01T00:00:00Z','2024-02-01T00:00:00Z'))",
        "name = 5 AND n = 'x'",
        "n = name",
        "S_INTERSECTS(geometry, 5)",
        "name LIKE 'abc\\'",
        "geometry = 1",
        "S_DWITHIN(geometry, POINT(1 2), -1, meters)",
        "S_DWITHIN(geometry, POINT(1 2), 10, parsecs)",
        "S_INTERSECTS(geometry, POINT(200 2))",
        "S_INTERSECTS(geometry, POLYGON((0 0, 1 1, 1 0, 0 1, 0 0)))",
        "S_INTERSECTS(geometry, SRID=3857;POINT(1 2))",
        "T_AFTER(n, TIMESTAMP('2024-01-01T00:00:00Z'))",
    ],
)
def test_unsupported_or_ill_typed_is_400(text):
    with pytest.raises(InvalidParameter) as err:
        sql_of(text)
    assert err.value.parameter == "filter"


def test_filter_lang_is_checked():
    with pytest.raises(InvalidParameter) as err:
        parse_filter("n = 1", "ecql")
    assert err.value.parameter == "filter-lang"


def test_like_in_between_is_null():
    sql, values = sql_of(
        "name LIKE 'B_n%' AND n IN (1, 2, 3) AND value BETWEEN 1 AND 2 "
        "AND day IS NULL AND name NOT LIKE 'x%' AND n NOT IN (7)"
    )
    assert "LIKE $1::text" in sql and "IN ($2::bigint, $3::bigint, $4::bigint)" in sql
    assert "BETWEEN $5::double precision AND $6::double precision" in sql
    assert 't."day" IS NULL' in sql and "NOT LIKE" in sql and "NOT IN" in sql
    assert values == ["B_n%", 1, 2, 3, 1.0, 2.0, "x%", 7]


def test_casei_and_accenti():
    sql, values = sql_of("CASEI(name) = casei('ĐƯỜNG') AND ACCENTI(name) LIKE ACCENTI('%duong%')")
    assert (
        'lower((t."name"::text) COLLATE "und-x-icu") = lower(($1::text) COLLATE "und-x-icu")' in sql
    )
    assert 'unaccent(t."name"::text) LIKE unaccent($2::text)' in sql


def test_standard_json_forms():
    text_sql, text_values = sql_of("n BETWEEN 1 AND 5 AND name IS NULL")
    doc = {
        "op": "and",
        "args": [
            {"op": "between", "args": [{"property": "n"}, 1, 5]},
            {"op": "isNull", "args": [{"property": "name"}]},
        ],
    }
    json_sql, json_values = sql_of(json.dumps(doc), "cql2-json")
    assert (text_sql, text_values) == (json_sql, json_values)


def test_temporal_functions_both_syntaxes():
    standard, v1 = sql_of("T_AFTER(observed_at, TIMESTAMP('2024-03-01T00:00:00Z'))")
    draft, v2 = sql_of("observed_at T_AFTER TIMESTAMP('2024-03-01T00:00:00Z')")
    assert standard == draft == '(t."observed_at" > $1::timestamptz)' and v1 == v2
    assert v1[0] == datetime(2024, 3, 1, tzinfo=UTC)


def test_temporal_intervals():
    sql, values = sql_of("T_DURING(observed_at, INTERVAL('2024-01-01T00:00:00Z', '..'))")
    assert sql == '(t."observed_at" > $1::timestamptz AND TRUE)'
    sql, values = sql_of("T_BEFORE(day, INTERVAL('2024-01-01', '2024-02-01'))")
    assert sql == '(t."day" < $1::date)' and values == [date(2024, 1, 1)]
    sql, _ = sql_of(
        "T_INTERSECTS(observed_at, INTERVAL('2024-01-01T00:00:00Z', '2024-02-01T00:00:00Z'))"
    )
    assert ">= $1::timestamptz" in sql and "<= $2::timestamptz" in sql
    doc = {"op": "t_intersects", "args": [{"property": "day"}, {"interval": ["..", "2024-01-01"]}]}
    sql, _ = sql_of(json.dumps(doc), "cql2-json")
    assert sql == '(TRUE AND t."day" <= $1::date)'
    doc["op"] = "t_disjoint"
    assert sql_of(json.dumps(doc), "cql2-json")[0] == '(NOT (TRUE AND t."day" <= $1::date))'
    assert (
        sql_of("T_DISJOINT(day, DATE('2024-01-01'))")[0]
        == '(NOT (t."day" >= $1::date AND t."day" <= $2::date))'
    )


def test_spatial_in_the_layer_crs_uses_the_column_directly():
    sql, values = sql_of("S_INTERSECTS(geometry, POINT(106.7 10.8))")
    assert sql == '(ST_Intersects(t."geom", ST_GeomFromWKB($1::bytea, 4326)))'
    assert shapely.from_wkb(values[0]).equals(shapely.Point(106.7, 10.8))


def test_spatial_on_a_vn2000_layer_transforms_the_column_with_an_index_prefilter():
    sql, values = sql_of(
        "S_WITHIN(geometry, POLYGON((106.6 10.7, 106.8 10.7, 106.8 10.9, 106.6 10.9, 106.6 10.7)))",
        layer=make_layer(9210),
    )
    assert sql.startswith('(t."geom" && ST_MakeEnvelope($2::double precision')
    assert 'ST_Within(ST_Transform(t."geom", 4326), ST_GeomFromWKB($1::bytea, 4326))' in sql
    assert 500_000 < values[1] < 700_000  # the prefilter box is in VN-2000 metres


def test_disjoint_has_no_prefilter():
    sql, _ = sql_of("S_DISJOINT(geometry, POINT(106.7 10.8))", layer=make_layer(9210))
    assert "&&" not in sql and "ST_Disjoint" in sql


def test_filter_crs_epsg4326_is_latitude_first():
    sql, values = sql_of("S_INTERSECTS(geometry, POINT(10.8 106.7))", filter_crs=crs.WGS84)
    assert shapely.from_wkb(values[0]).equals(shapely.Point(106.7, 10.8))


def test_bbox_literal_and_envelope():
    _, a = sql_of("S_INTERSECTS(geometry, BBOX(106.6, 10.7, 106.8, 10.9))")
    doc = {
        "op": "s_intersects",
        "args": [{"property": "geometry"}, {"bbox": [106.6, 10.7, 106.8, 10.9]}],
    }
    _, b = sql_of(json.dumps(doc), "cql2-json")
    assert shapely.from_wkb(a[0]).equals(shapely.from_wkb(b[0]))
    assert shapely.from_wkb(a[0]).bounds == (106.6, 10.7, 106.8, 10.9)


def test_dwithin_uses_geography_metres():
    sql, values = sql_of("S_DWITHIN(geometry, POINT(106.7 10.8), 1.5, kilometers)")
    assert 'ST_DWithin(t."geom"::geography, ST_GeomFromWKB($1::bytea, 4326)::geography' in sql
    assert 1500.0 in values and "&&" in sql


def test_boolean_literals_and_include():
    assert sql_of("INCLUDE")[0] == "TRUE" and sql_of("EXCLUDE")[0] == "FALSE"
    assert sql_of("true", "cql2-json")[0] == "TRUE"


def test_property_to_property():
    sql, values = sql_of("n < value")
    assert sql == '(t."n" < t."value")' and values == []
