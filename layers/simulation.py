"""The living demo city: a deterministic scenario of the live layers, tick by tick.

Given the features a layer holds and a seed, each tick advances a simulated clock (in HCMC
time) and returns the features that changed, whole (properties and geometry), so that a feed
upsert and a merge PATCH write the same thing. Nothing here speaks HTTP or SQL: the driver in
``layers.simulation_client`` reads the features and writes the changes through the public API.

- flood sensors follow rain storms: water rises where it is low-lying first (the south of the
  city: District 8, Bình Chánh, Nhà Bè), then drains away;
- congestion follows the day, with morning and evening rush hours; each segment reports every
  five minutes;
- 1022 reports arrive in the wards (more of them during the day, flooding ones in a storm) and
  the ward units move them from "mới" to "đang xử lý" to "đã đóng";
- hospitals report their occupied and free intensive-care beds every hour.

The same seed, start time and initial features give the same changes (one ``random.Random``
drawn in a fixed order), whatever the speed of the server.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

HCMC = ZoneInfo("Asia/Ho_Chi_Minh")
FLOOD, TRAFFIC, REPORTS, HOSPITALS = (
    "flood_sensors",
    "congestion_segments",
    "reports_1022",
    "hospital_capacity",
)
LIVE_LAYERS = (FLOOD, TRAFFIC, REPORTS, HOSPITALS)
# The attribute values each layer's manifest must offer (checked against its queryables).
NEEDED_VALUES = {
    FLOOD: ("status", ("bình thường", "cảnh báo", "mất tín hiệu")),
    TRAFFIC: ("level", ("thông thoáng", "đông", "chậm", "ùn tắc")),
    REPORTS: ("status", ("mới", "đang xử lý", "đã đóng")),
}
ALERT_CM = 30  # the drainage company's street-flood alert depth
SUMMARIES = {
    "ngập nước": "Ngập nước sau mưa",
    "rác thải": "Rác thải chưa được thu gom",
    "hư hỏng đường": "Mặt đường hư hỏng",
    "chiếu sáng": "Đèn đường không sáng",
    "trật tự đô thị": "Lấn chiếm vỉa hè",
    "tiếng ồn": "Tiếng ồn kéo dài",
    "cây xanh": "Cây xanh có nguy cơ gãy đổ",
    "giao thông": "Ùn tắc, đèn tín hiệu hỏng",
}


@dataclass
class Feature:
    """One feature as the simulator keeps it: its key (the id attribute's value, or the
    feature id for a layer without one), the server's feature id once known, and its state."""

    key: str
    properties: dict[str, Any]
    geometry: dict[str, Any]
    feature_id: str | None = None


@dataclass
class Change:
    """A feature to write: whole, so that an upsert and a merge patch agree."""

    layer: str
    feature: Feature
    new: bool = False


@dataclass
class _Sensor:
    feature: Feature
    lowland: float  # 0 (high ground, the north) … 1 (the lowest, the south)
    depth: float = 0.0
    last_sent: float = -1e9  # simulated minutes


@dataclass
class _Segment:
    feature: Feature
    free_kmh: float
    weight: float  # how strongly the rush hours reach this segment
    length_km: float


@dataclass
class _Report:
    feature: Feature
    due: float  # simulated minute of its next step


@dataclass
class Scenario:
    """The city's live layers and the clock; ``tick`` moves both on."""

    start: datetime
    seed: int = 2025
    minute: float = 0.0  # simulated minutes since ``start``
    rng: random.Random = field(init=False)
    sensors: list[_Sensor] = field(default_factory=list)
    segments: list[_Segment] = field(default_factory=list)
    reports: list[_Report] = field(default_factory=list)
    hospitals: list[Feature] = field(default_factory=list)
    templates: list[Feature] = field(default_factory=list)  # where reports may arrive
    storms: list[tuple[float, float, float]] = field(default_factory=list)  # start, length, peak
    created: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.start = self.start.astimezone(HCMC)
        # The first storm soon, so that a newcomer sees the water rise within minutes.
        self._plan_storms(self.rng.uniform(5, 20))

    @property
    def now(self) -> datetime:
        return self.start + timedelta(minutes=self.minute)

    # --- the initial state -------------------------------------------------------------------

    def add(self, layer: str, features: Iterable[Feature]) -> None:
        """Take a layer's current features (sorted by key: the draws do not depend on the
        order the server listed them in)."""
        for feat in sorted(features, key=lambda f: f.key):
            if layer == FLOOD:
                lon, lat = _anchor(feat.geometry)
                low = min(1.0, max(0.0, (10.90 - lat) / 0.25))
                # Dry streets before the first storm; heartbeats spread over ten minutes.
                heard = -10.0 * len(self.sensors) / 150
                self.sensors.append(_Sensor(feat, 0.7 * low + 0.3 * self.rng.random(), 0.0, heard))
            elif layer == TRAFFIC:
                length = _length_km(feat.geometry)
                free, weight = self.rng.uniform(32, 55), self.rng.uniform(0.6, 1.3)
                self.segments.append(_Segment(feat, free, weight, length))
            elif layer == REPORTS:
                self.templates.append(feat)
                if feat.properties.get("status") in ("mới", "đang xử lý"):
                    self.reports.append(_Report(feat, self._next_step(feat)))
            elif layer == HOSPITALS:
                self.hospitals.append(feat)

    # --- the clock ---------------------------------------------------------------------------

    def tick(self, minutes: float) -> list[Change]:
        """Advance the clock by ``minutes`` of simulated time; the features that changed."""
        before, self.minute = self.minute, self.minute + minutes
        return [
            *self._flood(before, minutes),
            *self._traffic(before),
            *self._reports(before, minutes),
            *self._hospitals(before),
        ]

    def rain_mm_h(self, minute: float) -> float:
        """Rain intensity at a simulated minute: triangular storms."""
        for begin, length, peak in self.storms:
            if begin <= minute < begin + length:
                x = (minute - begin) / length
                return peak * (x / 0.3 if x < 0.3 else (1 - x) / 0.7)
        return 0.0

    def _plan_storms(self, first: float) -> None:
        # Enough storms for a week of simulated time, each followed by a dry spell.
        begin = first
        while begin < 7 * 24 * 60:
            length = self.rng.uniform(60, 150)
            self.storms.append((begin, length, self.rng.uniform(40, 90)))
            begin += length + self.rng.uniform(120, 360)

    def _stamp(self) -> str:
        return self.now.isoformat(timespec="seconds")

    # --- the layers --------------------------------------------------------------------------

    def _flood(self, before: float, minutes: float) -> list[Change]:
        changes = []
        for s in self.sensors:
            # Water runs to the low-lying streets first: the higher a sensor, the later the rain
            # reaches it. Inflow with the lagged rain, outflow through the drains.
            rain = self.rain_mm_h(self.minute - 40 * (1 - s.lowland))
            inflow = 0.045 * rain * (0.3 + 0.7 * s.lowland)
            s.depth = max(0.0, s.depth + (inflow - 0.035 * s.depth) * min(minutes, 20))
            props = s.feature.properties
            depth = min(120, round(s.depth))
            silent = self.rng.random() < 0.002 * minutes
            status = (
                "mất tín hiệu" if silent else ("cảnh báo" if depth >= ALERT_CM else "bình thường")
            )
            if props.get("water_depth_cm") == depth and props.get("status") == status:
                if self.minute - s.last_sent < 10:  # a heartbeat every ten minutes
                    continue
            battery = props.get("battery_pct")
            if isinstance(battery, int) and self.rng.random() < 0.01 * minutes:
                props["battery_pct"] = max(0, battery - 1)
            props.update(water_depth_cm=depth, status=status, observed_at=self._stamp())
            s.last_sent = self.minute
            changes.append(Change(FLOOD, s.feature))
        return changes

    def demand(self, minute: float) -> float:
        """Traffic demand 0…1 at a simulated minute: the rush hours of a weekday."""
        local = self.start + timedelta(minutes=minute)
        h = local.hour + local.minute / 60
        peak = 0.65 * math.exp(-(((h - 7.5) / 1.0) ** 2)) + 0.75 * math.exp(
            -(((h - 17.5) / 1.2) ** 2)
        )
        return min(1.0, 0.2 + 0.12 * math.exp(-(((h - 12) / 1.5) ** 2)) + peak)

    def _traffic(self, before: float) -> list[Change]:
        changes = []
        n = max(1, len(self.segments))
        demand = self.demand(self.minute)
        for i, seg in enumerate(self.segments):
            # Every segment reports every five minutes, the fleet spread over them.
            offset = 5 * i / n
            if math.floor((self.minute - offset) / 5) == math.floor((before - offset) / 5):
                continue
            load = min(1.0, max(0.0, demand * seg.weight + self.rng.gauss(0, 0.06)))
            speed = max(3.0, seg.free_kmh * (1 - 0.88 * load))
            ratio = speed / seg.free_kmh
            level = (
                "thông thoáng"
                if ratio >= 0.75
                else "đông"
                if ratio >= 0.5
                else "chậm"
                if ratio >= 0.3
                else "ùn tắc"
            )
            delay = 60 * seg.length_km * (1 / speed - 1 / seg.free_kmh)
            seg.feature.properties.update(
                level=level,
                speed_kmh=round(min(60.0, speed), 1),
                delay_min=min(120, round(delay)),
                observed_at=self._stamp(),
            )
            changes.append(Change(TRAFFIC, seg.feature))
        return changes

    def _next_step(self, feat: Feature) -> float:
        # Ward units take about half an hour to pick a report up, a few hours to close it.
        mean = 30 if feat.properties.get("status") == "mới" else 180
        return self.minute + self.rng.expovariate(1 / mean)

    def _reports(self, before: float, minutes: float) -> list[Change]:
        changes = []
        for report in self.reports:
            if report.due > self.minute:
                continue
            props = report.feature.properties
            if props.get("status") == "mới":
                props["status"] = "đang xử lý"
                report.due = self._next_step(report.feature)
            else:
                props.update(status="đã đóng", resolved_at=self._stamp())
            changes.append(Change(REPORTS, report.feature))
        self.reports = [r for r in self.reports if r.feature.properties.get("status") != "đã đóng"]
        # Arrivals: ~60 an hour at the busiest, more flooding reports while it rains.
        rate = 60 * self.demand(self.minute) * minutes / 60
        for _ in range(_poisson(self.rng, rate) if self.templates else 0):
            feat = self._arrival()
            self.reports.append(_Report(feat, self._next_step(feat)))
            changes.append(Change(REPORTS, feat, new=True))
        return changes

    def _arrival(self) -> Feature:
        where = self.rng.choice(self.templates)
        lon, lat = _anchor(where.geometry)
        raining = self.rain_mm_h(self.minute) > 0
        category = (
            "ngập nước" if raining and self.rng.random() < 0.5 else self.rng.choice(list(SUMMARIES))
        )
        self.created += 1
        key = f"SIM-{self.start:%y%m%d%H%M}-{self.seed}-{self.created:05d}"
        # A few tens of metres from an earlier report: in the same ward, inside the city.
        point = [
            round(lon + self.rng.uniform(-2e-4, 2e-4), 7),
            round(lat + self.rng.uniform(-2e-4, 2e-4), 7),
        ]
        props = {
            "report_no": key,
            "category": category,
            "summary": SUMMARIES[category],
            "status": "mới",
            "reported_at": self._stamp(),
            "resolved_at": None,
            "handling_unit": where.properties.get("handling_unit"),
            "channel": self.rng.choice(["điện thoại", "ứng dụng", "web", "zalo"]),
            "ward_code": where.properties.get("ward_code"),
        }
        return Feature(key, props, {"type": "Point", "coordinates": point})

    def _hospitals(self, before: float) -> list[Change]:
        changes = []
        n = max(1, len(self.hospitals))
        for i, feat in enumerate(self.hospitals):
            offset = 60 * i / n  # hourly, spread over the hour
            if math.floor((self.minute - offset) / 60) == math.floor((before - offset) / 60):
                continue
            props = feat.properties
            beds = int(props.get("beds") or 300)
            occupied = int(props.get("occupied_beds") or 0.85 * beds)
            # A random walk pulled back towards 85–95 % occupancy (HCMC's central hospitals
            # run above 100 %: kept as the data says).
            target = beds * (0.85 + 0.1 * self.demand(self.minute))
            occupied = max(
                0, round(occupied + 0.2 * (target - occupied) + self.rng.gauss(0, 0.02 * beds))
            )
            icu = int(props.get("icu_beds_free") or 10)
            props.update(
                occupied_beds=min(4000, occupied),
                occupancy_pct=round(min(200.0, 100 * occupied / beds), 1),
                icu_beds_free=min(100, max(0, icu + self.rng.randint(-2, 2))),
                updated_at=self._stamp(),
            )
            changes.append(Change(HOSPITALS, feat))
        return changes


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; the means here are small)."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _anchor(geometry: dict[str, Any]) -> tuple[float, float]:
    """A point of the geometry: the point itself, or a line's first vertex."""
    coords: Any = geometry["coordinates"]
    while isinstance(coords[0], list):
        coords = coords[0]
    return float(coords[0]), float(coords[1])


def _length_km(geometry: dict[str, Any]) -> float:
    """A line's length on the sphere (short segments: the equirectangular approximation)."""
    coords = geometry.get("coordinates") or []
    if geometry.get("type") == "MultiLineString":
        coords = [c for part in coords for c in part]
    total = 0.0
    for a, b in zip(coords, coords[1:], strict=False):
        (x1, y1), (x2, y2) = a[:2], b[:2]
        dx = math.radians(x2 - x1) * math.cos(math.radians((y1 + y2) / 2))
        total += 6371.0 * math.hypot(dx, math.radians(y2 - y1))
    return max(total, 0.05)
