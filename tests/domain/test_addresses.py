"""Digital addresses against the seeded test database: registry, search, reverse geocoding,
links, what is here, import with rejected rows, batch geocoding."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import psycopg2
import pytest

from ioc.addresses.geocode import geocode_rows, search_addresses
from ioc.addresses.imports import ExportFile, import_addresses
from ioc.addresses.index import build_address_index, finish_registry_change, link_layer
from ioc.addresses.lookup import address_code_filter, get_address, reverse_geocode
from ioc.addresses.normalise import fold
from ioc.addresses.parsing import parse_query
from ioc.addresses.registry import AddressNotFound, AddressSettings, OutsideCity, validate_code
from ioc.addresses.whats_here import what_is_here
from ioc.catalog.access import ANONYMOUS, Principal
from ioc.catalog.layers import load_catalog_sync
from ioc.errors import InvalidParameter
from layers import registry

NOTRE_DAME = (106.6990, 10.7798)
OPERATOR = Principal(role="operator")


@pytest.fixture(scope="module")
def index(db_settings) -> Any:
    """The registry built from the demo city's address layer (and every point layer linked)."""
    conn = psycopg2.connect(db_settings.dsn())
    try:
        catalog = load_catalog_sync(conn)
        layer = next((la for la in catalog if la.id == "digital_addresses"), None)
        if layer is None or layer.feature_count == 0:
            pytest.skip("the demo city (digital_addresses) is not seeded")
        return build_address_index(conn, catalog, settings=AddressSettings())
    finally:
        conn.close()


@pytest.fixture
def arun(db_settings, index) -> Callable[..., Any]:
    """Run an async domain function with a fresh asyncpg connection."""

    def run(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def go() -> Any:
            conn = await asyncpg.connect(db_settings.dsn())
            try:
                return await func(conn, *args, **kwargs)
            finally:
                await conn.close()

        return asyncio.run(go())

    return run


@pytest.fixture
def catalog(db, index):
    return load_catalog_sync(db)


def sample(db, where: str = "TRUE", params: tuple = ()) -> dict[str, Any]:
    """One registry address (deterministic) with its ward names."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT a.code, a.house_number, a.street, a.ward_code, n.name, ST_X(a.geom),"
            f" ST_Y(a.geom) FROM ioc.addresses a JOIN ioc.address_names n ON n.kind = 'ward'"
            f" AND n.key = a.ward_code WHERE {where} ORDER BY a.code LIMIT 1",
            params,
        )
        row = cur.fetchone()
    db.rollback()
    assert row is not None, "no address matches"
    return dict(
        zip(("code", "house", "street", "ward_code", "ward", "lon", "lat"), row, strict=True)
    )


# --- normalisation -------------------------------------------------------------------------


def test_sql_and_python_fold_alike(db, index):
    texts = ["Đường Tân Định", "Phường Bến Thành", "Ðồng Khởi", "Hoà Lợi", "Quốc lộ 1A"]
    with db.cursor() as cur:
        cur.execute("SELECT ioc.search_key(t) FROM unnest(%s::text[]) t", (texts,))
        keys = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT ioc.street_key('Đường Lê Lợi'), ioc.street_key('Đường số 20')")
        streets = cur.fetchone()
    assert (
        keys
        == [fold(t) for t in texts]
        == ["duong tan dinh", "phuong ben thanh", "dong khoi", "hoa loi", "quoc lo 1a"]
    )
    assert streets == ("le loi", "duong so 20")


def test_parse_query_reads_house_district_and_noise():
    q = parse_query("Số 12 Lê Lợi, P. Bến Thành, Q.1, TP.HCM")
    assert q.house == "12"
    assert q.tokens == ["le", "loi", "p", "ben", "thanh", "q", "1"]
    assert q.weight == 5  # house + le loi + ben thanh; 'p', 'q 1', 'tp hcm' explain nothing
    with pytest.raises(InvalidParameter):
        parse_query("   ")
    with pytest.raises(InvalidParameter):
        parse_query("Thành phố Hồ Chí Minh")


def test_code_pattern_is_configurable(monkeypatch):
    assert validate_code(" 0123456789 ", AddressSettings().code_pattern) == "0123456789"
    with pytest.raises(InvalidParameter) as bad:
        validate_code("12345", AddressSettings().code_pattern)
    assert bad.value.parameter == "code"
    monkeypatch.setenv("IOC_ADDRESS_CODE_PATTERN", r"^HCM-\d{6}$")
    pattern = AddressSettings().code_pattern
    assert validate_code("HCM-123456", pattern) == "HCM-123456"
    with pytest.raises(InvalidParameter):
        validate_code("0123456789", pattern)


# --- search --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["tan dinh", "Tân Định", "Tan Dinh", "TÂN ĐỊNH", "tan dnih"])
def test_spellings_of_tan_dinh_find_the_ward(arun, text):
    hits = arun(search_addresses, text, limit=10)
    assert hits, text
    assert hits[0].row["ward_code"] == "26737"  # Phường Tân Định since 1 July 2025
    assert hits[0].matched["ward"] == "Phường Tân Định"


def test_ben_thanh_ranks_ben_thanh_addresses_first(arun):
    hits = arun(search_addresses, "ben thanh", limit=20)
    wards = [h.row["ward_code"] for h in hits]
    assert wards[0] == "26743"
    first_other = next((i for i, w in enumerate(wards) if w != "26743"), len(wards))
    assert all(w != "26743" for w in wards[first_other:]), wards
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_full_address_finds_the_address(arun, db):
    a = sample(db, "a.ward_code = '26743' AND a.house_number IS NOT NULL AND a.street IS NOT NULL")
    hits = arun(search_addresses, f"{a['house']} {a['street']}, Phường {a['ward']}, TP.HCM")
    top = hits[0]
    assert (top.row["house_number"], top.row["street"], top.row["ward_code"]) == (
        a["house"],
        a["street"],
        "26743",
    )
    assert top.level == "address" and top.score == 1.0
    # without diacritics and with a typo in the street, the same address still comes first
    typo = fold(a["street"]).replace(" ", "  ", 1)
    hits = arun(search_addresses, f"{a['house']} {typo} {fold(a['ward'])}")
    assert hits[0].row["code"] == top.row["code"]


def test_near_biases_and_bbox_filters(arun, db):
    a = sample(db, "a.ward_code = '26743'")
    hits = arun(search_addresses, "ben thanh", near=(a["lon"], a["lat"]), limit=5)
    assert hits[0].row["code"] == a["code"] and hits[0].distance_m < 1
    box = (a["lon"] - 0.002, a["lat"] - 0.002, a["lon"] + 0.002, a["lat"] + 0.002)
    inside = arun(search_addresses, "ben thanh", bbox=box, limit=50)
    assert inside and all(
        box[0] <= h.row["lon"] <= box[2] and box[1] <= h.row["lat"] <= box[3] for h in inside
    )


def test_unknown_words_find_nothing(arun):
    assert arun(search_addresses, "xyzzy qwerty") == []


# --- look-ups ------------------------------------------------------------------------------


def test_get_address_and_unknown_code(arun, db):
    a = sample(db)
    row = arun(get_address, a["code"])
    assert row["ward_code"] == a["ward_code"] and row["ward_label"].endswith(a["ward"])
    with pytest.raises(AddressNotFound):
        arun(get_address, "0000000000")


def test_reverse_geocoding_finds_the_nearest_address(arun, db, catalog):
    a = sample(db, "a.ward_code = '26740'")
    row, ward = arun(reverse_geocode, catalog, ANONYMOUS, a["lon"] + 0.00003, a["lat"], 1000)
    assert row["code"] == a["code"]
    assert 2 < row["distance_m"] < 5  # 0.00003° of longitude at 10.8° N is 3.3 m
    assert ward["ward_code"] == "26740"


@pytest.mark.parametrize("lon,lat", [(105.85, 21.03), (107.4, 9.3), (200.0, 10.0)])
def test_positions_outside_the_city_are_refused(arun, catalog, lon, lat):
    with pytest.raises(InvalidParameter) as exc:  # OutsideCity is an InvalidParameter
        arun(reverse_geocode, catalog, ANONYMOUS, lon, lat, 1000)
    assert exc.value.parameter == "lon,lat"
    if lon <= 180:
        assert isinstance(exc.value, OutsideCity)


# --- what is here --------------------------------------------------------------------------


def test_whats_here_at_notre_dame(arun, catalog, data_dir):
    if data_dir is None:
        pytest.skip("needs the real ward polygons (IOC_DATA_DIR)")
    answer = arun(
        what_is_here, catalog, ANONYMOUS, AddressSettings(), lon=NOTRE_DAME[0], lat=NOTRE_DAME[1]
    )
    assert answer["ward"]["properties"]["ward_code"] == "26740"
    assert answer["ward"]["properties"]["full_name"] == "Phường Sài Gòn"
    nearest = answer["nearest"]
    for key in ("hospital", "school", "pumping_station", "bus_stop"):
        assert nearest[key]["distance_m"] >= 0, key
    assert nearest["bus_stop"]["distance_m"] < 1000


def test_whats_here_omits_layers_the_caller_may_not_read(arun, catalog):
    anonymous = arun(
        what_is_here, catalog, ANONYMOUS, AddressSettings(), lon=NOTRE_DAME[0], lat=NOTRE_DAME[1]
    )
    operator = arun(
        what_is_here, catalog, OPERATOR, AddressSettings(), lon=NOTRE_DAME[0], lat=NOTRE_DAME[1]
    )
    # reports_1022 and wards_2019 are internal layers
    assert "reports" not in anonymous and "ward_2019" not in anonymous
    assert "reports_1022" not in anonymous["layers"]
    assert "reports_1022" in operator["layers"] and operator["reports"]["recent"]["radius_m"] == 300
    assert operator["ward_2019"] is not None
    for item in operator["reports"]["recent"]["items"]:
        assert item["distance_m"] <= 300


def test_whats_here_by_address(arun, db, catalog):
    a = sample(db, "a.ward_code = '26743'")
    answer = arun(what_is_here, catalog, ANONYMOUS, AddressSettings(), code=a["code"])
    assert answer["address"]["id"] == a["code"]
    assert answer["ward"]["properties"]["ward_code"] == "26743"


# --- links ---------------------------------------------------------------------------------


@pytest.fixture
def point_layer(db, index):
    """A small point layer of our own: one point 5 m from an address, one far from any."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT code, ST_X(geom), ST_Y(geom) FROM ioc.addresses"
            " WHERE ward_code = '26743' ORDER BY code LIMIT 1"
        )
        code, x, y = cur.fetchone()
        cur.execute(
            "DROP SCHEMA IF EXISTS addrtest CASCADE; CREATE SCHEMA addrtest;"
            " CREATE TABLE addrtest.kiosks (fid integer PRIMARY KEY, name text,"
            " geom geometry(Point, 4326))"
        )
        cur.execute(
            "INSERT INTO addrtest.kiosks VALUES (1, 'near', ST_SetSRID(ST_MakePoint(%s,"
            " %s), 4326)), (2, 'far', ST_SetSRID(ST_MakePoint(106.3, 10.5), 4326))",
            (x + 0.000045, y),
        )
        cur.execute("DELETE FROM ioc.layers WHERE id = 'addrtest_kiosks'")
    db.commit()
    registry.add_table(db, "addrtest", "kiosks", layer_id="addrtest_kiosks", access="public")
    layer = next(la for la in load_catalog_sync(db) if la.id == "addrtest_kiosks")
    yield layer, code
    with db.cursor() as cur:
        cur.execute(
            "DELETE FROM ioc.address_links WHERE layer_id = 'addrtest_kiosks';"
            " DELETE FROM ioc.layers WHERE id = 'addrtest_kiosks';"
            " DROP SCHEMA addrtest CASCADE"
        )
    db.commit()


def links_of(db, layer_id: str) -> dict[int, tuple[str, float]]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT fid, code, distance_m FROM ioc.address_links WHERE layer_id = %s", (layer_id,)
        )
        found = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
    db.rollback()
    return found


def test_link_layer_links_nearby_features_and_follows_changes(db, point_layer):
    layer, code = point_layer
    assert link_layer(db, layer, AddressSettings()) == 1
    db.commit()
    links = links_of(db, layer.id)
    assert list(links) == [1] and links[1][0] == code and 4 < links[1][1] < 6
    # feature 1 moves away, feature 2 moves next to the address: relinking those two follows
    with db.cursor() as cur:
        cur.execute(
            "UPDATE addrtest.kiosks SET geom = CASE fid WHEN 1 THEN"
            " ST_SetSRID(ST_MakePoint(106.3, 10.5), 4326) ELSE (SELECT geom FROM"
            " ioc.addresses WHERE code = %s) END",
            (code,),
        )
    link_layer(db, layer, AddressSettings(), fids=[1, 2])
    db.commit()
    links = links_of(db, layer.id)
    assert list(links) == [2] and links[2] == (code, 0.0)
    # the condition the items endpoint adds for ?address=CODE
    condition = address_code_filter(layer, "%s", "%s", "t")
    with db.cursor() as cur:
        cur.execute(f"SELECT t.fid FROM addrtest.kiosks t WHERE {condition}", (layer.id, code))
        assert [r[0] for r in cur.fetchall()] == [2]
        cur.execute(
            f"SELECT t.fid FROM addrtest.kiosks t WHERE {condition}", (layer.id, "0000000000")
        )
        assert cur.fetchall() == []
    db.rollback()


def test_seeded_point_layers_are_linked(index, db):
    assert index.links.get("reports_1022", 0) > 0
    with db.cursor() as cur:
        cur.execute("SELECT max(distance_m), count(DISTINCT layer_id) FROM ioc.address_links")
        max_distance, layers = cur.fetchone()
    db.rollback()
    assert max_distance <= AddressSettings().link_distance_m and layers > 10


# --- import --------------------------------------------------------------------------------

GOOD_CODES = ("0900000001", "0900000002")


@pytest.fixture
def cleanup_imports(db, index):
    yield
    with db.cursor() as cur:
        cur.execute("DELETE FROM ioc.addresses WHERE code LIKE '09000000%%'")
    db.commit()
    finish_registry_change(db, load_catalog_sync(db), AddressSettings(), {}, link=False)


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(
        "\n".join(["ma_dia_chi,so_nha,ten_duong,ma_phuong_xa,kinh_do,vi_do,hieu_luc_tu"] + rows)
        + "\n",
        encoding="utf-8",
    )
    return path


def test_import_keeps_good_rows_and_reports_bad_ones(db, tmp_path, cleanup_imports):
    path = write_csv(
        tmp_path / "export.csv",
        [
            "0900000001,12A,Lê Lợi,,106.6990,10.7720,2025-07-01",  # good, ward from polygon
            "0900000002,7,Đồng Khởi,26740,106.7030,10.7770,01/07/2025",  # good, Vietnamese date
            "12345,1,Lê Lợi,,106.70,10.77,",  # bad code
            "0900000003,1,Lê Lợi,,105.85,21.03,",  # Hà Nội
            "0900000001,1,Lê Lợi,,106.70,10.77,",  # duplicate of row 2
            "0900000004,1,Lê Lợi,,abc,10.77,",  # not a number
            "0900000005,1,Lê Lợi,99999,106.70,10.77,",  # unknown ward
            "0900000006,1,Lê Lợi,,107.40,9.30,",  # at sea, no ward
            "0900000007,1,Lê Lợi,,106.70,10.77,2025-13-45",  # bad date
        ],
    )
    report = import_addresses(db, ExportFile(path), settings=AddressSettings(), link=False)
    assert report.read == 9 and report.imported == 2
    rejected = {r.row: r.reason for r in report.rejected}
    assert sorted(rejected) == [4, 5, 6, 7, 8, 9, 10]
    assert "invalid code" in rejected[4] and "outside the city" in rejected[5]
    assert "duplicate" in rejected[6] and "row 2" in rejected[6]
    assert "unknown ward code 99999" in rejected[8] and "outside every ward" in rejected[9]
    assert "date" in rejected[10]
    with db.cursor() as cur:
        cur.execute(
            "SELECT code, ward_code, source, valid_from::text FROM ioc.addresses"
            " WHERE code LIKE '09000000%%' ORDER BY code"
        )
        rows = cur.fetchall()
    db.rollback()
    assert rows == [
        ("0900000001", "26743", "export:export.csv", "2025-07-01"),
        ("0900000002", "26740", "export:export.csv", "2025-07-01"),
    ]
    report_path = tmp_path / "rejected.csv"
    report.write_rejected(report_path)
    assert report_path.read_text(encoding="utf-8").count("\n") == 8  # header + 7 rows


def test_cli_import_reports_rejected_rows(db_settings, tmp_path, monkeypatch, cleanup_imports):
    from typer.testing import CliRunner

    from ioc.cli import app
    from ioc.config import get_settings

    if db_settings.managed:
        monkeypatch.setenv("IOC_DB_NAME", db_settings.db_name)
    else:
        monkeypatch.setenv("DATABASE_URL", db_settings.dsn())
    get_settings.cache_clear()
    path = write_csv(
        tmp_path / "cli.csv",
        ["0900000001,1,Lê Lợi,,106.6990,10.7720,", "bad,1,Lê Lợi,,106.6990,10.7720,"],
    )
    report = tmp_path / "rejected.csv"
    try:
        result = CliRunner().invoke(
            app, ["addresses", "import", str(path), "--dry-run", "--report", str(report)]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "2 rows read, would import 1, rejected 1" in result.output
    assert "invalid code" in report.read_text(encoding="utf-8")
    missing = CliRunner().invoke(app, ["addresses", "import", str(tmp_path / "none.csv")])
    assert missing.exit_code == 1


def test_import_dry_run_writes_nothing(db, tmp_path, cleanup_imports):
    path = write_csv(tmp_path / "dry.csv", ["0900000001,1,Lê Lợi,,106.6990,10.7720,"])
    report = import_addresses(
        db, ExportFile(path), settings=AddressSettings(), dry_run=True, link=False
    )
    assert report.imported == 1 and report.index is None
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM ioc.addresses WHERE code = '0900000001'")
        assert cur.fetchone()[0] == 0
    db.rollback()


def test_import_geojson_rejects_non_points_and_wins_over_the_demo(db, tmp_path, cleanup_imports):
    demo = sample(db)
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [106.6990, 10.7720]},
            "properties": {"code": GOOD_CODES[0], "house_number": "1", "street": "Lê Lợi"},
        },
        {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[106.69, 10.77], [106.7, 10.78]]},
            "properties": {"code": GOOD_CODES[1]},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [106.7030, 10.7770]},
            "properties": {"code": demo["code"], "house_number": "99", "street": "Đồng Khởi"},
        },
    ]
    path = tmp_path / "export.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    report = import_addresses(
        db, ExportFile(path, source="vneid-test"), settings=AddressSettings(), link=False
    )
    assert report.imported == 2 and [r.row for r in report.rejected] == [2]
    with db.cursor() as cur:
        cur.execute(
            "SELECT house_number, source FROM ioc.addresses WHERE code = %s", (demo["code"],)
        )
        assert cur.fetchone() == ("99", "vneid-test")
    db.rollback()
    # the demo layer never overwrites an address the platform gave
    build_address_index(db, settings=AddressSettings(), link=False)
    with db.cursor() as cur:
        cur.execute("SELECT source FROM ioc.addresses WHERE code = %s", (demo["code"],))
        assert cur.fetchone()[0] == "vneid-test"
        cur.execute(
            "UPDATE ioc.addresses SET source = 'layer:digital_addresses' WHERE code = %s",
            (demo["code"],),
        )
    db.commit()
    build_address_index(db, settings=AddressSettings(), link=False)  # restores the demo row


# --- batch geocoding -----------------------------------------------------------------------


def test_geocode_rows_round_trip(arun, db):
    a = sample(db, "a.ward_code = '26743' AND a.house_number IS NOT NULL")
    b = sample(db, "a.ward_code = '26737' AND a.house_number IS NOT NULL")
    rows = [
        ("r1", f"{a['house']} {a['street']}, Phường {a['ward']}"),
        ("r2", fold(f"{b['house']} {b['street']} {b['ward']}")),
        ("r3", "không có gì ở đây xyz"),
        ("r4", ""),
    ]
    out = arun(geocode_rows, rows)
    assert [r["id"] for r in out] == ["r1", "r2", "r3", "r4"]
    assert out[0]["ward_code"] == "26743" and out[0]["score"] == 1.0
    assert out[0]["matched_address"].startswith(f"{a['house']} {a['street']}")
    assert out[1]["ward_code"] == "26737" and out[1]["match_level"] == "address"
    assert out[2]["code"] is None and out[2]["match_level"] == "none"
    assert out[3]["score"] == 0.0
