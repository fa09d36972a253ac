"""Property-based fuzzing of the features API: whatever the query, never a 500.

Hypothesis draws collections, parameters and CQL2 filters — well-formed ones from a small
grammar over the fixture layers' real and unknown properties, and raw junk — and checks that
every answer is 200/304/400/404, that a 400 names its parameter, and that a 200 parses.
"""

from __future__ import annotations

import json
import string
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
COLLECTIONS = [
    "fx_points",
    "fx_vn2000",
    "fx_odd_names",
    "fx_empty",
    "fx_huge_polygon",
    "fx_landmarks",
    "fx_internal",
    "fx_restricted",
    "nope",
]
PROPERTIES = [
    "category",
    "n",
    "value",
    "ok",
    "day",
    "observed_at",
    "so_thua",
    "area_m2",
    "Mixed Case",
    "has space",
    'quote"d',
    "select",
    "name",
    "built",
    "geometry",
    "nope",
    "geom",
    "fid",
    "label",
]
CRSS = [
    "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
    EPSG + "4326",
    EPSG + "3857",
    EPSG + "9210",
    "EPSG:9210",
    "EPSG:32648",
    "EPSG:0",
    "",
    "junk",
]
FORMATS = ["json", "geojson", "html", "csv", "geojsonseq", "xml", ""]

safe_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
numbers = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-200, 200),
    st.floats(9e5, 2e6),
)
lon = st.floats(-181, 181, allow_nan=False)
lat = st.floats(-91, 91, allow_nan=False)


def _quoted(name: str) -> str:
    return name if name.isidentifier() and len(name) > 1 else '"' + name + '"'


def _string_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


points = st.tuples(lon, lat).map(lambda p: f"{p[0]} {p[1]}")
geometries = st.one_of(
    points.map(lambda p: f"POINT({p})"),
    st.lists(points, min_size=2, max_size=5).map(lambda ps: f"LINESTRING({', '.join(ps)})"),
    st.lists(points, min_size=3, max_size=6).map(
        lambda ps: f"POLYGON(({', '.join(ps + [ps[0]])}))"
    ),
    st.tuples(lon, lat, lon, lat).map(lambda b: f"BBOX({b[0]}, {b[1]}, {b[2]}, {b[3]})"),
)
timestamps = st.datetimes().map(lambda d: f"TIMESTAMP('{d.isoformat(timespec='seconds')}Z')")
dates = st.dates().map(lambda d: f"DATE('{d.isoformat()}')")
literals = st.one_of(
    numbers.map(str),
    safe_text.map(_string_literal),
    st.sampled_from(["TRUE", "FALSE", "NULL"]),
    timestamps,
    dates,
)
props = st.sampled_from(PROPERTIES).map(_quoted)

predicates = st.one_of(
    st.tuples(props, st.sampled_from(["=", "<>", "<", "<=", ">", ">="]), literals).map(" ".join),
    st.tuples(props, st.sampled_from(["=", "<"]), props).map(" ".join),
    st.tuples(props, safe_text).map(lambda t: f"{t[0]} LIKE {_string_literal(t[1])}"),
    st.tuples(props, st.lists(literals, min_size=1, max_size=4)).map(
        lambda t: f"{t[0]} IN ({', '.join(t[1])})"
    ),
    st.tuples(props, literals, literals).map(lambda t: f"{t[0]} BETWEEN {t[1]} AND {t[2]}"),
    props.map(lambda p: f"{p} IS NULL"),
    st.tuples(
        st.sampled_from(["S_INTERSECTS", "S_WITHIN", "S_CONTAINS", "S_DISJOINT", "S_TOUCHES"]),
        props,
        geometries,
    ).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
    st.tuples(props, geometries, numbers, st.sampled_from(["meters", "km", "parsecs"])).map(
        lambda t: f"S_DWITHIN({t[0]}, {t[1]}, {t[2]}, {t[3]})"
    ),
    st.tuples(
        st.sampled_from(["T_AFTER", "T_BEFORE", "T_DURING", "T_INTERSECTS", "T_MEETS"]),
        props,
        st.one_of(
            timestamps,
            dates,
            st.tuples(st.datetimes(), st.datetimes()).map(
                lambda p: (
                    f"INTERVAL('{p[0].isoformat(timespec='seconds')}Z', "
                    f"'{p[1].isoformat(timespec='seconds')}Z')"
                )
            ),
        ),
    ).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
    props.map(lambda p: f"CASEI({p}) = casei('ABC')"),
    props.map(lambda p: f"ACCENTI({p}) LIKE accenti('%đ%')"),
)
cql_text = st.recursive(
    predicates,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["AND", "OR"]), inner).map(lambda t: f"({' '.join(t)})"),
        inner.map(lambda c: f"NOT ({c})"),
    ),
    max_leaves=6,
)

json_scalars = st.one_of(st.none(), st.booleans(), numbers.filter(lambda x: x == x), safe_text)
cql_json = st.recursive(
    st.one_of(
        json_scalars,
        st.sampled_from(PROPERTIES).map(lambda p: {"property": p}),
        st.tuples(lon, lat).map(lambda p: {"type": "Point", "coordinates": list(p)}),
        st.lists(numbers.filter(lambda x: x == x), min_size=4, max_size=4).map(
            lambda b: {"bbox": b}
        ),
    ),
    lambda inner: st.one_of(
        st.fixed_dictionaries(
            {
                "op": st.sampled_from(
                    [
                        "and",
                        "or",
                        "not",
                        "=",
                        "<",
                        "like",
                        "in",
                        "between",
                        "isNull",
                        "s_intersects",
                        "s_dwithin",
                        "t_after",
                        "t_intersects",
                        "casei",
                        "accenti",
                        "+",
                        "a_equals",
                    ]
                ),
                "args": st.lists(inner, max_size=3),
            }
        ),
        st.lists(inner, max_size=3),
    ),
    max_leaves=8,
)


def mostly(valid, junk):
    """Valid values three times as often as junk, so that many requests reach the SQL."""
    return st.one_of(valid, valid, valid, junk)


city_lon = st.floats(106.3, 107.1)
city_lat = st.floats(10.3, 11.2)
params = st.fixed_dictionaries(
    {},
    optional={
        "bbox": mostly(
            st.tuples(city_lon, city_lat, city_lon, city_lat).map(
                lambda b: f"{min(b[0], b[2])},{min(b[1], b[3])},{max(b[0], b[2])},{max(b[1], b[3])}"
            ),
            st.one_of(
                st.lists(numbers, min_size=3, max_size=7).map(lambda xs: ",".join(map(str, xs))),
                st.tuples(lon, lat, lon, lat).map(lambda b: ",".join(map(str, b))),
                safe_text,
            ),
        ),
        "bbox-crs": mostly(st.sampled_from(CRSS[:2]), st.sampled_from(CRSS)),
        "crs": mostly(st.sampled_from(CRSS[:5]), st.sampled_from(CRSS)),
        "filter-crs": mostly(st.sampled_from(CRSS[:2]), st.sampled_from(CRSS)),
        "datetime": mostly(
            st.sampled_from(
                [
                    "2024-01-01",
                    "2024-01-01T00:00:00Z",
                    "../2024-02-01",
                    "2024-01-01/..",
                    "../..",
                    "2024-01-01T10:00:00+07:00/2024-01-03",
                ]
            ),
            st.one_of(safe_text, st.sampled_from(["2024-13-01", "2024-01-01T25:00:00Z", "/"])),
        ),
        "limit": mostly(st.integers(1, 10_000), st.one_of(st.integers(-5, 20_000), safe_text)),
        "offset": mostly(st.integers(0, 30_000), st.one_of(st.integers(-5, 2**60), safe_text)),
        "sortby": st.one_of(
            st.lists(st.sampled_from(PROPERTIES)).map(
                lambda xs: ",".join(("-" if i % 2 else "+") + x for i, x in enumerate(xs))
            ),
            safe_text,
        ),
        "properties": st.one_of(st.lists(st.sampled_from(PROPERTIES)).map(",".join), safe_text),
        "f": mostly(st.sampled_from(FORMATS[:5]), st.sampled_from(FORMATS)),
    },
)


def check(response) -> None:
    assert response.status_code in (200, 304, 400, 404), (response.status_code, response.text)
    if response.status_code == 400:
        body = response.json()
        assert body["code"] and body["description"] and body.get("parameter"), body
    elif (
        response.status_code == 200
        and response.headers["content-type"].startswith(
            ("application/geo+json", "application/json")
        )
        and "seq" not in response.headers["content-type"]
    ):
        json.loads(response.content)


FUZZ = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(
    collection=st.sampled_from(COLLECTIONS),
    query=params,
    cql=st.one_of(st.none(), cql_text, safe_text),
)
def test_items_never_500_with_text_filters(client, collection, query, cql):
    if cql is not None:
        query = {**query, "filter": cql}
    check(client.get(f"/collections/{collection}/items", params=query))


@FUZZ
@given(collection=st.sampled_from(COLLECTIONS[:5]), doc=cql_json)
def test_items_never_500_with_json_filters(client, collection, doc):
    response = client.get(
        f"/collections/{collection}/items",
        params={"filter": json.dumps(doc), "filter-lang": "cql2-json"},
    )
    check(response)


@settings(max_examples=150, deadline=None, database=None)
@given(
    collection=st.sampled_from(COLLECTIONS),
    feature_id=st.one_of(
        st.integers(-(2**70), 2**70).map(str),
        safe_text.filter(lambda s: s.strip("/.") == s),
        st.text(string.digits + "-_.e", max_size=25),
    ),
    crs=st.sampled_from(CRSS + [None]),
)
def test_feature_by_id_never_500(client, collection, feature_id, crs):
    if not feature_id:
        return
    query = {"crs": crs} if crs is not None else {}
    response = client.get(
        f"/collections/{collection}/items/{quote(feature_id, safe='')}", params=query
    )
    check(response)


# Well-typed filters on fx_points: they should all reach PostgreSQL and answer 200.
clean_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
typed = st.one_of(
    st.tuples(
        st.sampled_from(["n", "value"]),
        st.sampled_from(["=", "<>", "<", ">=", ">"]),
        st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6)),
    ).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(st.sampled_from(["=", "<>", "<", ">"]), clean_text).map(
        lambda t: f"category {t[0]} {_string_literal(t[1])}"
    ),
    clean_text.filter(lambda s: not s.endswith("\\")).map(
        lambda t: f"category LIKE {_string_literal(t)}"
    ),
    st.lists(st.integers(0, 120), min_size=1, max_size=5).map(
        lambda xs: f"n IN ({', '.join(map(str, xs))})"
    ),
    st.tuples(st.floats(-10, 3000), st.floats(-10, 3000)).map(
        lambda t: f"value BETWEEN {t[0]} AND {t[1]}"
    ),
    st.sampled_from(["ok = TRUE", "ok = FALSE", "day IS NULL", "category IS NOT NULL"]),
    st.tuples(
        st.sampled_from(["T_AFTER", "T_BEFORE", "T_INTERSECTS", "T_DISJOINT"]),
        st.datetimes().map(lambda d: d.isoformat(timespec="seconds") + "Z"),
    ).map(lambda t: f"{t[0]}(observed_at, TIMESTAMP('{t[1]}'))"),
    st.tuples(
        st.sampled_from(["S_INTERSECTS", "S_WITHIN", "S_DISJOINT"]),
        city_lon,
        city_lat,
        st.floats(0.001, 0.3),
    ).map(lambda t: f"{t[0]}(geometry, BBOX({t[1]}, {t[2]}, {t[1] + t[3]}, {t[2] + t[3]}))"),
    st.tuples(city_lon, city_lat, st.floats(0, 5000)).map(
        lambda t: f"S_DWITHIN(geometry, POINT({t[0]} {t[1]}), {t[2]}, meters)"
    ),
)
typed_filters = st.recursive(
    typed,
    lambda inner: st.tuples(inner, st.sampled_from(["AND", "OR"]), inner).map(
        lambda t: f"({' '.join(t)})"
    ),
    max_leaves=4,
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    cql=typed_filters,
    limit=st.integers(1, 3000),
    crs=st.sampled_from(CRSS[:4]),
    fmt=st.sampled_from(["json", "csv", "geojsonseq"]),
)
def test_well_typed_filters_answer(client, cql, limit, crs, fmt):
    response = client.get(
        "/collections/fx_points/items", params={"filter": cql, "limit": limit, "crs": crs, "f": fmt}
    )
    assert response.status_code == 200, (cql, response.text)
    check(response)
