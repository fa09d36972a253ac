"""The layer catalog: every manifest loads, the contract ids exist, and the validators bite."""

from __future__ import annotations

import copy
import gzip
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from layers.manifest import (
    DEPARTMENTS,
    DOMAINS,
    LayerManifest,
    ManifestError,
    load_catalog,
    load_manifest,
)

# Real dataset files (without extension) that a manifest may name in source.dataset.
DATASETS = {
    "wards_2025",
    "province_2025",
    "wards_2019",
    "districts_2019",
    "districts_2024",
    "province_2024",
    "roads_osm_2018",
    "waterways_osm_2018",
    "water_areas_osm_2018",
    "railways_osm_2018",
    "landuse_osm_2018",
    "pois_osm_2018",
    "bus_stops",
    "bus_routes",
    "traffic_cameras",
}

# Ids other code depends on.
REQUIRED_IDS = {
    "city_boundary",
    "wards",
    "wards_2019",
    "districts_2019",
    "districts_2024",
    "city_boundary_2024",
    "quarters",
    "flood_points",
    "rain_gauges",
    "tide_gauges",
    "pumping_stations",
    "sluice_gates",
    "canals",
    "water_areas",
    "drainage_lines",
    "flood_risk_zones",
    "flood_sensors",
    "flood_warnings",
    "roads",
    "road_segments",
    "bridges",
    "bus_stops",
    "bus_routes",
    "railways",
    "metro_lines",
    "metro_stations",
    "traffic_cameras",
    "congestion_segments",
    "parking_lots",
    "traffic_lights",
    "accidents",
    "zoning",
    "planned_roads",
    "construction_permits",
    "landuse_osm",
    "parcels",
    "buildings",
    "hospitals",
    "schools",
    "markets",
    "police_stations",
    "fire_stations",
    "one_stop_centres",
    "pharmacies",
    "clinics",
    "post_offices",
    "air_quality_stations",
    "water_quality_stations",
    "parks",
    "waste_points",
    "noise_monitoring",
    "trees",
    "reports_1022",
    "digital_addresses",
    "streets",
    "house_numbers",
    "ward_indicators",
}

WARDS_FIELDS = [
    "ward_code",
    "name",
    "full_name",
    "unit_type",
    "name_en",
    "full_name_en",
    "code_name",
    "province_code",
    "area_km2",
    "population",
    "admin_center",
    "before_merger",
]


@pytest.fixture(scope="module")
def catalog() -> list[LayerManifest]:
    return load_catalog()


@pytest.fixture(scope="module")
def by_id(catalog: list[LayerManifest]) -> dict[str, LayerManifest]:
    return {m.id: m for m in catalog}


def test_catalog_size_and_domains(catalog: list[LayerManifest]) -> None:
    assert len(catalog) >= 200
    domains = {m.domain for m in catalog}
    assert len(domains) >= 10
    assert domains <= set(DOMAINS)
    assert {m.department for m in catalog} <= set(DEPARTMENTS)


def test_catalog_is_sorted_and_ids_unique(catalog: list[LayerManifest]) -> None:
    keys = [(m.domain, m.id) for m in catalog]
    assert keys == sorted(keys)
    duplicates = [i for i, n in Counter(m.id for m in catalog).items() if n > 1]
    assert duplicates == []


def test_required_layers_exist(by_id: dict[str, LayerManifest]) -> None:
    assert REQUIRED_IDS - set(by_id) == set()


def test_access_levels_all_used(catalog: list[LayerManifest]) -> None:
    counts = Counter(m.access for m in catalog)
    assert set(counts) == {"public", "internal", "restricted"}
    assert counts["public"] > counts["internal"] > counts["restricted"]


def test_dataset_layers_name_known_datasets(catalog: list[LayerManifest]) -> None:
    backed = [m for m in catalog if m.source.dataset]
    assert backed, "no layer loads a real dataset"
    unknown = {m.id: m.source.dataset for m in backed if m.source.dataset not in DATASETS}
    assert unknown == {}


def test_synthetic_layers_have_modest_schemas(catalog: list[LayerManifest]) -> None:
    for m in catalog:
        assert len(m.attributes) >= 2, m.id
        if m.source.dataset is None:
            assert len(m.attributes) <= 10, m.id


def test_wards_contract(by_id: dict[str, LayerManifest]) -> None:
    wards = by_id["wards"]
    assert wards.id_attribute == "ward_code"
    assert wards.source.dataset == "wards_2025"
    assert wards.geometry.type == "MultiPolygon"
    assert [a.name for a in wards.attributes] == WARDS_FIELDS
    assert wards.attribute("ward_code").required  # type: ignore[union-attr]


def test_cadastre_layers_use_vn2000(by_id: dict[str, LayerManifest]) -> None:
    assert by_id["parcels"].geometry.srid == 9210
    assert by_id["parcels"].access == "restricted"
    assert by_id["buildings"].geometry.srid == 9210
    assert by_id["flood_points"].geometry.srid == 4326


def test_big_demo_layers(by_id: dict[str, LayerManifest]) -> None:
    assert by_id["reports_1022"].demo.city_count == 1_000_000
    assert by_id["digital_addresses"].demo.city_count == 1_000_000
    assert by_id["buildings"].demo.city_count == 300_000
    assert by_id["road_segments"].demo.city_count == 50_000
    assert by_id["reports_1022"].time_attribute == "reported_at"


def _data_dir() -> Path | None:
    env = os.environ.get("IOC_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data" / "hcmc")
    return next((p for p in candidates if p.is_dir()), None)


def _dataset_fields(folder: Path, name: str) -> set[str] | None:
    for path in (folder / f"{name}.geojson", folder / f"{name}.geojson.gz"):
        if path.exists():
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as fh:
                features = json.load(fh)["features"]
            return set().union(*(f["properties"] for f in features))
    return None


def test_dataset_attributes_match_real_fields(catalog: list[LayerManifest]) -> None:
    folder = _data_dir()
    if folder is None:
        pytest.skip("real data folder not available (set IOC_DATA_DIR)")
    fields: dict[str, set[str] | None] = {}
    for m in catalog:
        name = m.source.dataset
        if name is None:
            continue
        if name not in fields:
            fields[name] = _dataset_fields(folder, name)
        if fields[name] is None:
            continue
        missing = {a.name for a in m.attributes} - fields[name]  # type: ignore[operator]
        assert missing == set(), f"{m.id}: not fields of {name}: {sorted(missing)}"


# --------------------------------------------------------------------------------- validators

VALID: dict[str, Any] = {
    "id": "test_points",
    "title": {"vi": "Điểm thử", "en": "Test points"},
    "description": {"vi": "Lớp thử nghiệm.", "en": "A test layer."},
    "domain": "flooding",
    "department": "construction",
    "geometry": {"type": "Point", "srid": 4326},
    "access": "public",
    "cadence": "daily",
    "source": {"name": "Sở Xây dựng TP.HCM", "licence": "CC BY 4.0"},
    "time_attribute": "observed_at",
    "zoom": {"min": 10, "max": 22},
    "attributes": [
        {
            "name": "depth_cm",
            "type": "integer",
            "label": {"vi": "Độ sâu", "en": "Depth"},
            "range": [0, 150],
        },
        {"name": "observed_at", "type": "timestamp", "label": {"vi": "Thời điểm", "en": "Time"}},
    ],
    "style": {
        "color": "#1f78b4",
        "legend": [{"label": {"vi": "Điểm", "en": "Point"}, "color": "#1f78b4"}],
    },
    "demo": {"count": 10, "weight": "lowland"},
}


def _write(
    root: Path, data: dict[str, Any], folder: str = "flooding", stem: str | None = None
) -> Path:
    path = root / folder / f"{stem or data['id']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _changed(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data.update(changes)
    return data


def test_valid_manifest_loads(tmp_path: Path) -> None:
    manifest = load_manifest(_write(tmp_path, VALID))
    assert manifest.id == "test_points"
    assert manifest.attribute("depth_cm").range == (0, 150)  # type: ignore[union-attr]
    assert [m.id for m in load_catalog(tmp_path)] == ["test_points"]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"id": "Bad-Id"}, "id"),
        ({"id": "x"}, "id"),
        ({"time_attribute": "reported_at"}, "time_attribute"),
        ({"time_attribute": "depth_cm"}, "date or timestamp"),
        ({"id_attribute": "missing"}, "id_attribute"),
        ({"department": "transport"}, "department"),
        ({"access": "secret"}, "access"),
        ({"zoom": {"min": 15, "max": 10}}, "zoom"),
        ({"geometry": {"type": "Point", "srid": 3857}}, "srid"),
        (
            {
                "style": {
                    "color": "blue",
                    "legend": [{"label": {"vi": "a", "en": "a"}, "color": "#000000"}],
                }
            },
            "color",
        ),
        ({"style": {"color": "#000000", "legend": []}}, "legend"),
        ({"unexpected": True}, "unexpected"),
    ],
)
def test_invalid_manifests_are_rejected(
    tmp_path: Path, changes: dict[str, Any], fragment: str
) -> None:
    data = _changed(**changes)
    with pytest.raises(ManifestError) as info:
        load_manifest(_write(tmp_path, data, stem="test_points"))
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("attribute", "fragment"),
    [
        ({"name": "geom", "type": "text", "label": {"vi": "a", "en": "a"}}, "reserved"),
        ({"name": "Depth", "type": "text", "label": {"vi": "a", "en": "a"}}, "pattern"),
        ({"name": "depth_cm", "type": "text", "label": {"vi": "a", "en": "a"}}, "unique"),
        (
            {"name": "kind", "type": "text", "label": {"vi": "a", "en": "a"}, "range": [0, 1]},
            "range",
        ),
        (
            {
                "name": "level",
                "type": "integer",
                "label": {"vi": "a", "en": "a"},
                "values": ["cao"],
            },
            "does not fit",
        ),
    ],
)
def test_invalid_attributes_are_rejected(
    tmp_path: Path, attribute: dict[str, Any], fragment: str
) -> None:
    data = _changed()
    data["attributes"].append(attribute)
    with pytest.raises(ManifestError, match=fragment):
        load_manifest(_write(tmp_path, data))


def test_style_by_and_filter_must_name_attributes(tmp_path: Path) -> None:
    data = _changed()
    data["style"]["by"] = "status"
    with pytest.raises(ManifestError, match="style.by"):
        load_manifest(_write(tmp_path, data))
    data = _changed(
        source={
            "name": "OSM",
            "licence": "ODbL 1.0",
            "dataset": "pois_osm_2018",
            "filter": {"poi_type": ["hospital"]},
        }
    )
    with pytest.raises(ManifestError, match="source.filter.poi_type"):
        load_manifest(_write(tmp_path, data))


def test_wrong_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="folder"):
        load_manifest(_write(tmp_path, VALID, folder="transport"))


def test_file_name_must_match_id(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="file name"):
        load_manifest(_write(tmp_path, VALID, stem="other_points"))


def test_unknown_domain_folder_is_rejected(tmp_path: Path) -> None:
    data = _changed(domain="weather")
    with pytest.raises(ManifestError, match="unknown domain"):
        load_manifest(_write(tmp_path, data, folder="weather"))


def test_duplicate_ids_across_domains_are_rejected(tmp_path: Path) -> None:
    _write(tmp_path, VALID)
    other = _changed(domain="environment")
    _write(tmp_path, other, folder="environment")
    with pytest.raises(ManifestError, match="already used"):
        load_catalog(tmp_path)


def test_broken_yaml_is_reported_with_path(tmp_path: Path) -> None:
    path = tmp_path / "flooding" / "broken.yaml"
    path.parent.mkdir()
    path.write_text("id: [unclosed\n", encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.path == path
    assert "broken.yaml" in str(info.value)
