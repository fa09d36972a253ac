"""The live-city scenario on its own: deterministic by seed, water rising where the city is low
first, rush hours, 1022 reports moving through their statuses, values from the manifests."""

from __future__ import annotations

import copy
from datetime import datetime

from layers.manifest import load_catalog
from layers.simulation import (
    FLOOD,
    HCMC,
    HOSPITALS,
    NEEDED_VALUES,
    REPORTS,
    TRAFFIC,
    Feature,
    Scenario,
)

MORNING = datetime(2025, 6, 2, 5, 0, tzinfo=HCMC)


def point(lon: float, lat: float) -> dict:
    return {"type": "Point", "coordinates": [lon, lat]}


def city() -> dict[str, list[Feature]]:
    sensors = [
        Feature(f"FS-{i:03d}", {"sensor_id": f"FS-{i:03d}", "water_depth_cm": 0}, point(106.7, lat))
        for i, lat in enumerate((10.66, 10.72, 10.80, 10.95))
    ]
    line = {"type": "LineString", "coordinates": [[106.70, 10.78], [106.71, 10.78]]}
    segments = [Feature(f"S-{i}", {"segment_id": f"S-{i}"}, line) for i in range(20)]
    reports = [
        Feature(
            f"R-{i}",
            {"report_no": f"R-{i}", "status": "mới", "ward_code": "26734", "handling_unit": "UBND"},
            point(106.70, 10.78),
        )
        for i in range(30)
    ]
    hospitals = [
        Feature(
            str(i), {"beds": 500, "occupied_beds": 400, "icu_beds_free": 10}, point(106.7, 10.8)
        )
        for i in range(6)
    ]
    return {FLOOD: sensors, TRAFFIC: segments, REPORTS: reports, HOSPITALS: hospitals}


def run(seed: int, ticks: int = 240, minutes: float = 1.0) -> tuple[Scenario, list]:
    scenario = Scenario(MORNING, seed=seed)
    for layer, features in city().items():
        scenario.add(layer, copy.deepcopy(features))
    written = []
    for _ in range(ticks):
        written.append(
            [(c.layer, c.feature.key, copy.deepcopy(c.feature.properties), c.new)
             for c in scenario.tick(minutes)]
        )  # fmt: skip
    return scenario, written


def test_the_same_seed_writes_the_same_changes():
    assert run(7)[1] == run(7)[1]
    assert run(7)[1] != run(8)[1]


def test_water_rises_in_the_low_south_before_the_high_north():
    scenario = Scenario(MORNING, seed=7)
    scenario.add(FLOOD, city()[FLOOD])
    first_alert: dict[str, float] = {}
    depths: dict[str, list[int]] = {}
    while scenario.minute < scenario.storms[0][0] + scenario.storms[0][1] + 240:
        for change in scenario.tick(1):
            props = change.feature.properties
            depths.setdefault(change.feature.key, []).append(props["water_depth_cm"])
            if props["status"] == "cảnh báo":
                first_alert.setdefault(change.feature.key, scenario.minute)
    south, north = "FS-000", "FS-003"  # latitude 10.66 (Nhà Bè) and 10.95 (Củ Chi)
    assert south in first_alert
    assert first_alert[south] < first_alert.get(north, float("inf"))
    assert max(depths[south]) > max(depths[north])
    assert depths[south][-1] < max(depths[south])  # and drains after the storm


def test_rush_hour_is_slower_than_the_night():
    scenario = Scenario(MORNING.replace(hour=0), seed=7)
    assert scenario.demand(8 * 60) > 2 * scenario.demand(3 * 60)
    assert scenario.demand(17.5 * 60) > scenario.demand(12 * 60)


def test_reports_move_new_to_in_progress_to_closed_and_arrive():
    scenario, written = run(7)
    seen: dict[str, list[str]] = {}
    for tick in written:
        for layer, key, props, _new in tick:
            if layer == REPORTS:
                seen.setdefault(key, []).append(props["status"])
    order = ["mới", "đang xử lý", "đã đóng"]
    for statuses in seen.values():
        assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
    assert any(s[-1] == "đã đóng" for s in seen.values())
    arrivals = [key for tick in written for layer, key, _p, new in tick if new]
    assert arrivals and all(k.startswith("SIM-") for k in arrivals)
    assert len(set(arrivals)) == len(arrivals)


def test_written_values_are_the_manifests():
    manifests = {m.id: m for m in load_catalog()}
    _scenario, written = run(7)
    for layer, (name, needed) in NEEDED_VALUES.items():
        attrs = {a.name: a for a in manifests[layer].attributes}
        assert set(needed) <= set(attrs[name].values or ())
        for tick in written:
            for lay, _key, props, _new in tick:
                if lay == layer:
                    assert set(props) <= set(attrs), (layer, set(props) - set(attrs))
                    assert props[name] in attrs[name].values
    assert manifests[TRAFFIC].id_attribute == "segment_id"
