"""Administrative units: the real ward and district files when present, plausible stand-ins
built from the official codes and centroids of the ``vietnamadminunits`` package otherwise.

Synthetic polygons are Voronoi cells of the official centroids, clipped so that each cell stays
near its centroid; they look like wards on a map but are not legal boundaries.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
import shapely.affinity

from layers.democity.geo import (
    BEN_THANH,
    cast_geometries,
    distance_m,
    from_local,
    to_local,
    to_metric,
)
from layers.democity.names import ascii_fold
from layers.democity.sources import find_dataset, licence_of, read_dataset

HCMC_PROVINCE = "79"
# Codes of the former HCMC (before the July 2025 merger with Bình Dương and Bà Rịa–Vũng Tàu).
OLD_HCMC_CODES = (26734, 27700)
# 2019 districts by first ward code (GSO code ranges): code, Vietnamese name, ASCII name, type.
DISTRICTS_2019 = (
    (26734, "760", "Quận 1", "District 1", "Quận"),
    (26764, "761", "Quận 12", "District 12", "Quận"),
    (26794, "762", "Quận Thủ Đức", "Thu Duc", "Quận"),
    (26830, "763", "Quận 9", "District 9", "Quận"),
    (26869, "764", "Quận Gò Vấp", "Go Vap", "Quận"),
    (26905, "765", "Quận Bình Thạnh", "Binh Thanh", "Quận"),
    (26965, "766", "Quận Tân Bình", "Tan Binh", "Quận"),
    (27010, "767", "Quận Tân Phú", "Tan Phu", "Quận"),
    (27043, "768", "Quận Phú Nhuận", "Phu Nhuan", "Quận"),
    (27088, "769", "Quận 2", "District 2", "Quận"),
    (27121, "770", "Quận 3", "District 3", "Quận"),
    (27163, "771", "Quận 10", "District 10", "Quận"),
    (27208, "772", "Quận 11", "District 11", "Quận"),
    (27256, "773", "Quận 4", "District 4", "Quận"),
    (27301, "774", "Quận 5", "District 5", "Quận"),
    (27346, "775", "Quận 6", "District 6", "Quận"),
    (27388, "776", "Quận 8", "District 8", "Quận"),
    (27436, "777", "Quận Bình Tân", "Binh Tan", "Quận"),
    (27466, "778", "Quận 7", "District 7", "Quận"),
    (27496, "783", "Huyện Củ Chi", "Cu Chi", "Huyện"),
    (27559, "784", "Huyện Hóc Môn", "Hoc Mon", "Huyện"),
    (27595, "785", "Huyện Bình Chánh", "Binh Chanh", "Huyện"),
    (27643, "786", "Huyện Nhà Bè", "Nha Be", "Huyện"),
    (27664, "787", "Huyện Cần Giờ", "Can Gio", "Huyện"),
)
UNIT_LEVEL_EN = {
    "Phường": "Ward",
    "Xã": "Commune",
    "Thị trấn": "Township",
    "Đặc khu": "Special zone",
}
# Default dataset stem of each administrative layer id.
ADMIN_DATASETS = {
    "wards": "wards_2025",
    "wards_2019": "wards_2019",
    "districts_2019": "districts_2019",
    "districts_2024": "districts_2024",
    "city_boundary": "province_2025",
    "city_boundary_2024": "province_2024",
}


@dataclass
class Units:
    """Administrative units: one attribute row and one lon/lat MultiPolygon per unit."""

    table: pd.DataFrame
    geoms: np.ndarray
    synthetic: bool
    note: str
    _bounds: np.ndarray | None = field(default=None, repr=False)

    def locate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the unit containing each lon/lat point, -1 outside every unit.

        A bounding-box test then a prepared point-in-polygon test per unit: about 0.4 s for
        a million points against the 168 full-resolution wards (an STRtree query is 30x slower).
        A point on a shared boundary goes to the unit listed first.
        """
        if self._bounds is None:
            shapely.prepare(self.geoms)
            self._bounds = shapely.bounds(self.geoms)
        found = np.full(len(x), -1, dtype=np.int64)
        for k, (x0, y0, x1, y1) in enumerate(self._bounds):
            idx = np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (found < 0))
            if len(idx):
                inside = shapely.intersects_xy(self.geoms[k], x[idx], y[idx])
                found[idx[inside]] = k
        return found


def _package_db() -> sqlite3.Connection:
    path = resources.files("vietnamadminunits") / "data" / "dataset.db"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _density_model(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Plausible persons/km² decaying from the centre and the two former provincial capitals."""
    d0 = distance_m(x, y, *BEN_THANH) / 1000
    d1 = distance_m(x, y, 106.652, 10.980) / 1000  # Thủ Dầu Một
    d2 = distance_m(x, y, 107.084, 10.346) / 1000  # Vũng Tàu
    return 600 + 38_000 * np.exp(-d0 / 5.5) + 9_000 * np.exp(-d1 / 5) + 7_000 * np.exp(-d2 / 4)


def _voronoi_cells(x: np.ndarray, y: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Voronoi cells (lon/lat) of points, each intersected with its own clip shape (local metres)."""
    points = to_local(shapely.points(x, y))
    # Geocoded centroids sometimes coincide; GEOS needs distinct sites, so nudge repeats apart.
    xy = np.round(shapely.get_coordinates(points))
    _, first, counts = np.unique(xy, axis=0, return_index=True, return_counts=True)
    if np.any(counts > 1):
        seen: dict[tuple[float, float], int] = {}
        for i, key in enumerate(map(tuple, xy)):
            k = seen[key] = seen.get(key, -1) + 1
            xy[i] += (250.0 * k, 150.0 * k)
        points = shapely.points(xy)
    extent = shapely.box(*shapely.total_bounds(points)).buffer(50_000)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(points), extend_to=extent, ordered=True)
    )
    cells = shapely.make_valid(shapely.intersection(cells, clip))
    cells, rows = cast_geometries(cells, "MultiPolygon")
    out = np.empty(len(x), dtype=object)
    out[rows] = cells
    missing = np.setdiff1d(np.arange(len(x)), rows)  # never expected: a small disc as a fallback
    out[missing] = shapely.multipolygons(shapely.buffer(points[missing], 300, quad_segs=4)[:, None])
    return from_local(out)


def synthetic_wards_2025() -> Units:
    """The 168 wards of July 2025 as Voronoi cells of their official centroids."""
    with _package_db() as db:
        rows = db.execute(
            "SELECT wardCode, wardShort, ward, wardType, wardLat, wardLon, wardAreaKm2 "
            "FROM admin_units WHERE provinceCode = ? ORDER BY wardCode",
            (HCMC_PROVINCE,),
        ).fetchall()
    t = pd.DataFrame(
        rows, columns=["ward_code", "name", "full_name", "unit_type", "lat", "lon", "area_km2"]
    )
    x, y = t["lon"].to_numpy(float), t["lat"].to_numpy(float)
    metric = to_local(shapely.points(x, y))
    # Clip to a hull around the mainland centroids, and each cell to a disc a little larger
    # than the ward's published area, so edge wards and Côn Đảo do not swell into the sea.
    gaps = np.array(
        [
            shapely.distance(p, shapely.multipoints(np.delete(metric, i)))
            for i, p in enumerate(metric)
        ]
    )
    mainland = shapely.concave_hull(shapely.multipoints(metric[gaps < 40_000]), ratio=0.3).buffer(
        4_000
    )
    radius = 2.5 * np.sqrt(t["area_km2"].to_numpy(float) * 1e6 / np.pi)
    discs = shapely.buffer(metric, radius, quad_segs=16)
    clip = np.where(gaps < 40_000, shapely.intersection(discs, mainland), discs)
    geoms = _voronoi_cells(x, y, clip)
    area = shapely.area(to_metric(geoms)) / 1e6
    t["name_en"] = t["name"].map(ascii_fold)
    t["full_name_en"] = t["name_en"] + " " + t["unit_type"].map(UNIT_LEVEL_EN).fillna("Ward")
    t["code_name"] = t["name_en"].str.lower().str.replace(r"[^a-z0-9]+", "_", regex=True)
    t["province_code"] = HCMC_PROVINCE
    t["population"] = np.round(_density_model(x, y) * t["area_km2"] / 10).astype(np.int64) * 10
    t["admin_center"] = "Trụ sở UBND " + t["full_name"]
    t["area_km2"] = np.round(area, 2)
    note = (
        "Synthetic ward polygons built around official ward centroids (vietnamadminunits); "
        "not legal boundaries; populations modelled."
    )
    return Units(t.drop(columns=["lat", "lon"]), geoms, True, note)


def _legacy_table() -> pd.DataFrame:
    with _package_db() as db:
        rows = db.execute(
            "SELECT wardCode, ward, wardShort, wardType, districtCode, district, districtType, "
            "wardLat, wardLon, wardBounds FROM admin_units_legacy WHERE provinceCode = ? "
            "ORDER BY wardCode",
            (HCMC_PROVINCE,),
        ).fetchall()
    return pd.DataFrame(
        rows,
        columns=[
            "ward_code",
            "full_name",
            "name",
            "unit_type",
            "district_code_2024",
            "district_name_2024",
            "district_type_2024",
            "lat",
            "lon",
            "bounds",
        ],
    )


def _bounds_box(text: str | None, x: float, y: float) -> shapely.Geometry:
    """The package's 'lat,lon – lat,lon' ward extent, widened by 30 % (metric)."""
    try:
        if text is None:
            raise ValueError("no extent")
        (a, b), (c, d) = (map(float, p.split(",")) for p in text.replace("–", "-").split(" - "))
        box = shapely.box(min(b, d), min(a, c), max(b, d), max(a, c))
    except (AttributeError, ValueError):
        box = shapely.Point(x, y).buffer(0.01)
    box = to_local(np.array([box]))[0]
    return shapely.buffer(shapely.affinity.scale(box, 1.3, 1.3), 300, join_style="mitre")


def synthetic_wards_2019() -> Units:
    """Pre-2021 wards stand-in: the 273 units of the package's legacy list (1 Jan 2025)."""
    t = _legacy_table()
    x, y = t["lon"].to_numpy(float), t["lat"].to_numpy(float)
    clip = np.array([_bounds_box(b, xi, yi) for b, xi, yi in zip(t["bounds"], x, y, strict=True)])
    geoms = _voronoi_cells(x, y, clip)
    area = shapely.area(to_metric(geoms)) / 1e6
    starts = np.array([d[0] for d in DISTRICTS_2019])
    district = [
        DISTRICTS_2019[i] for i in np.searchsorted(starts, t["ward_code"].astype(int), "right") - 1
    ]
    t["district_code"] = [d[1] for d in district]
    t["district_name"] = [d[2] for d in district]
    t["district_name_ascii"] = [d[3] for d in district]
    t["district_type"] = [d[4] for d in district]
    t["ward_name"] = t["full_name"]
    t["ward_name_ascii"] = t["name"].map(ascii_fold)
    t["unit_level"] = t["unit_type"].map(UNIT_LEVEL_EN).fillna("Ward")
    t["province_code"] = HCMC_PROVINCE
    t["area_km2"] = np.round(area, 3)
    density = _density_model(x, y) * 0.75  # 2019 was smaller and less dense than 2025
    t["pop_2019"] = np.round(density * area).astype(np.int64)
    t["pop_2009"] = np.round(t["pop_2019"] * 0.8).astype(np.int64)
    t["density_2019"] = np.round(density, 1)
    t["density_2009"] = np.round(density * 0.8, 1)
    t["district_code_2024"] = t["district_code_2024"].astype(str)
    t["name_2025h1_same_code"] = t["full_name"]
    note = (
        "Synthetic pre-2025 ward polygons around package centroids of the 273 units of "
        "1 Jan 2025 (vietnamadminunits lacks the 49 wards abolished since 2019); not legal boundaries."
    )
    return Units(t.drop(columns=["lat", "lon", "bounds"]), geoms, True, note)


def dissolve(units: Units, by: str, columns: dict[str, str], note: str) -> Units:
    """Units merged on a key column; ``columns`` maps output names to source columns (first value)."""
    groups = units.table.groupby(by, sort=True).indices
    keys = list(groups)
    geoms = np.array([shapely.union_all(units.geoms[groups[k]]) for k in keys], dtype=object)
    geoms, rows = cast_geometries(shapely.make_valid(geoms), "MultiPolygon")
    table = pd.DataFrame(
        {out: [units.table[src].iloc[groups[k][0]] for k in keys] for out, src in columns.items()}
    )
    for col in ("pop_2019", "population"):
        if col in units.table:
            table[col] = [int(units.table[col].iloc[groups[k]].sum()) for k in keys]
    table["area_km2"] = np.round(shapely.area(to_metric(geoms)) / 1e6, 2)
    return Units(table.iloc[rows].reset_index(drop=True), geoms, units.synthetic, note)


def real_units(data_dir: Path | None, stem: str) -> Units | None:
    """Units read from a real file of the data directory, or None when it is missing."""
    path = find_dataset(data_dir, stem)
    if path is None:
        return None
    frame = read_dataset(path)
    geoms, rows = cast_geometries(np.asarray(frame.geometry.array, dtype=object), "MultiPolygon")
    table = pd.DataFrame(frame.drop(columns="geometry")).iloc[rows].reset_index(drop=True)
    return Units(table, geoms, False, f"Loaded from {stem} ({licence_of(stem)}).")


def synthetic_units(stem: str, wards_2025: Units, legacy: Units) -> Units:
    """Synthetic stand-in for an administrative dataset, derived from ward cells."""
    if stem == "wards_2019":
        return legacy
    if stem == "districts_2019":
        cols = {
            "district_code": "district_code",
            "district_name": "district_name",
            "district_name_ascii": "district_name_ascii",
            "district_type": "district_type",
        }
        units = dissolve(
            legacy,
            "district_code",
            cols,
            "Synthetic 2019 districts: unions of synthetic ward cells "
            "grouped by official GSO code ranges; not legal boundaries.",
        )
        units.table["unit_level"] = "District"
    elif stem == "districts_2024":
        cols = {
            "district_code": "district_code_2024",
            "district_name": "district_name_2024",
            "district_type": "district_type_2024",
        }
        units = dissolve(
            legacy,
            "district_code_2024",
            cols,
            "Synthetic 2021–2025 districts: unions of synthetic "
            "ward cells (vietnamadminunits legacy list); not legal boundaries.",
        )
    elif stem in ("province_2025", "province_2024"):
        source = wards_2025 if stem == "province_2025" else legacy
        what = (
            ("the synthetic 2025 ward cells" if source.synthetic else "the real 2025 wards")
            if stem == "province_2025"
            else "synthetic pre-2025 ward cells"
        )
        merged = source.table.assign(_all=HCMC_PROVINCE)
        units = dissolve(
            Units(merged, source.geoms, True, ""),
            "_all",
            {"province_code": "_all"},
            f"Synthetic city outline: union of {what}; not the legal boundary.",
        )
    else:
        raise KeyError(f"no synthetic administrative units for dataset {stem!r}")
    units.table["province_code"] = HCMC_PROVINCE
    if stem.startswith("province"):
        units.table["name"] = "Hồ Chí Minh"
        units.table["full_name"] = "Thành phố Hồ Chí Minh"
        units.table["name_en"] = "Ho Chi Minh"
        units.table["full_name_en"] = "Ho Chi Minh City"
    else:
        units.table["name"] = units.table["district_name"]
        units.table["full_name"] = units.table["district_name"]
    return units


def is_old_hcmc(codes: pd.Series) -> np.ndarray:
    """True for 2025 ward codes inherited from the former Ho Chi Minh City."""
    numeric = pd.to_numeric(codes, errors="coerce").to_numpy()
    return (numeric >= OLD_HCMC_CODES[0]) & (numeric < OLD_HCMC_CODES[1])
