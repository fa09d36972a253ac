"""Reading the real open-data files of the city (IOC_DATA_DIR) for dataset-backed layers.

Files are GeoJSON (RFC 7946, lon/lat), large ones gzipped; GDAL reads those through the
``/vsigzip/`` prefix without unpacking. Nothing read here is stored in the repository.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from layers.democity.geo import cast_geometries
from layers.manifest import AttributeSpec

SUFFIXES = (".geojson", ".geojson.gz", ".gpkg", ".json")

# Licence of each known file (see shared/data/hcmc/SOURCES.md), quoted in the seed notes.
LICENCES: dict[str, str] = {
    "wards_2025": "MIT",
    "province_2025": "MIT",
    "admin_units_2025_mapping": "MIT",
    "traffic_cameras": "MIT",
    "wards_2019": "licence unknown",
    "districts_2019": "licence unknown",
    "districts_2024": "licence unknown",
    "province_2024": "licence unknown",
    "bus_stops": "licence unknown",
    "bus_routes": "licence unknown",
}
OSM_LICENCE = "ODbL 1.0, © OpenStreetMap contributors"


def licence_of(stem: str) -> str:
    """The licence to quote for a dataset file stem."""
    return OSM_LICENCE if stem.endswith("_osm_2018") else LICENCES.get(stem, "licence unknown")


def find_dataset(data_dir: Path | None, stem: str | None) -> Path | None:
    """The file for a dataset stem in the data directory, or None when it is absent."""
    if data_dir is None or stem is None:
        return None
    for suffix in SUFFIXES:
        path = Path(data_dir) / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def gdal_path(path: Path) -> str:
    """A path GDAL can open; gzipped files go through the /vsigzip/ virtual file system."""
    return f"/vsigzip/{path}" if path.suffix == ".gz" else str(path)


def read_dataset(path: Path, columns: list[str] | None = None) -> gpd.GeoDataFrame:
    """A dataset file as a GeoDataFrame in EPSG:4326 (only the columns asked for, if given)."""
    if columns is not None:
        available = set(pyogrio.read_info(gdal_path(path))["fields"])
        columns = [c for c in columns if c in available]
    frame = pyogrio.read_dataframe(gdal_path(path), columns=columns)
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    return frame.reset_index(drop=True)


def apply_filter(frame: pd.DataFrame, spec: dict[str, list] | None) -> pd.DataFrame:
    """Rows whose fields take one of the listed values (all fields must match)."""
    if not spec:
        return frame
    keep = np.ones(len(frame), dtype=bool)
    for field, values in spec.items():
        if field not in frame.columns:
            return frame.iloc[0:0]
        column = frame[field]
        keep &= column.isin(values).to_numpy() | column.astype(str).isin([str(v) for v in values])
    return frame[keep].reset_index(drop=True)


def load_layer_frame(
    path: Path, attribute_names: list[str], filter_spec: dict | None, geometry_type: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of a dataset file for one layer: the attribute columns the file has, and geometries
    cast to the layer's type (lon/lat); multi-part rows may be exploded for single types."""
    wanted = list(dict.fromkeys(attribute_names + list((filter_spec or {}).keys())))
    frame = apply_filter(read_dataset(path, wanted), filter_spec)
    geoms = np.asarray(frame.geometry.array, dtype=object)
    invalid = ~shapely.is_valid(geoms)
    geoms[invalid] = shapely.make_valid(geoms[invalid])
    geoms, rows = cast_geometries(geoms, geometry_type)
    table = pd.DataFrame(frame.drop(columns="geometry")).iloc[rows]
    table = table[[c for c in attribute_names if c in table.columns]].reset_index(drop=True)
    return table, geoms


def is_null(column: np.ndarray) -> np.ndarray:
    """Null mask of a column in any of the representations above."""
    if column.dtype.kind == "f":
        return np.isnan(column)
    if column.dtype.kind == "M":
        return np.isnat(column)
    return np.array([v is None or v != v for v in column], dtype=bool)


def coerce(values: object, attr: AttributeSpec) -> np.ndarray:
    """Known values (real file or hand-made) in the representation of the attribute's type;
    what cannot be parsed becomes null."""
    array = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
    if attr.type in ("integer", "number"):
        if array.dtype.kind not in "fiub":
            array = pd.to_numeric(pd.Series(array), errors="coerce").to_numpy(dtype=float)
        array = array.astype(float)
        return np.round(array) if attr.type == "integer" else array
    if attr.type in ("date", "timestamp"):
        if array.dtype.kind != "M":
            stamps = pd.to_datetime(pd.Series(array), errors="coerce", utc=True).dt.tz_localize(
                None
            )
            array = stamps.to_numpy(dtype="datetime64[s]")
        return array.astype("datetime64[D]" if attr.type == "date" else "datetime64[s]")
    if attr.type == "boolean":
        truthy = {"true", "t", "1", "yes", "y", "có", "co"}
        falsy = {"false", "f", "0", "no", "n", "không", "khong", ""}
        return np.array(
            [
                None
                if v is None or v != v
                else bool(v)
                if isinstance(v, bool | np.bool_)
                else True
                if str(v).strip().lower() in truthy
                else False
                if str(v).strip().lower() in falsy
                else None
                for v in array
            ],
            dtype=object,
        )
    out = np.empty(len(array), dtype=object)
    out[:] = [None if v is None or v != v else v if type(v) is str else str(v) for v in array]
    return out
