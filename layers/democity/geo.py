"""Geometry helpers shared by the generators: projections, type casts, vectorised shapes.

Everything is generated in WGS 84 lon/lat (EPSG:4326, x = longitude) and projected once at the
end to the layer's SRID. Metric work (buffers, Voronoi cells, lengths) uses UTM 48N, which is
accurate to a few parts per thousand over the whole city.
"""

from __future__ import annotations

import numpy as np
import pyproj
import shapely

from ioc.features.crs import transformer

METRIC_EPSG = 32648  # WGS 84 / UTM zone 48N: the zone of Ho Chi Minh City
M_PER_DEG_LAT = 110_574.0
BEN_THANH = (106.698, 10.772)
LOCAL_LON0, LOCAL_LAT0 = (
    106.7,
    10.8,
)  # origin of the affine local frame  # Bến Thành market, the conventional centre of the city


def _transformer(src: int, dst: int) -> pyproj.Transformer:
    # The same transformation PostGIS applies (official VN-2000 shift), in (lon, lat) order.
    return transformer(src, dst)


def reproject(geoms: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Geometries moved from one EPSG code to another (vectorised over all coordinates)."""
    if src == dst or len(geoms) == 0:
        return geoms
    transformer = _transformer(src, dst)

    def move(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, move)


def to_metric(geoms: np.ndarray) -> np.ndarray:
    """Lon/lat geometries in metres (UTM 48N)."""
    return reproject(geoms, 4326, METRIC_EPSG)


def to_lonlat(geoms: np.ndarray) -> np.ndarray:
    """UTM 48N geometries back in lon/lat."""
    return reproject(geoms, METRIC_EPSG, 4326)


def to_local(geoms: np.ndarray) -> np.ndarray:
    """Lon/lat to metres by an affine map (equirectangular at the city's latitude).

    Unlike a true projection it keeps straight lines straight both ways, so polygons built in
    it (Voronoi cells) still share their edges exactly once back in lon/lat.
    """
    kx = float(m_per_deg_lon(LOCAL_LAT0))
    return shapely.transform(
        geoms,
        lambda c: np.column_stack(
            [(c[:, 0] - LOCAL_LON0) * kx, (c[:, 1] - LOCAL_LAT0) * M_PER_DEG_LAT]
        ),
    )


def from_local(geoms: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_local`."""
    kx = float(m_per_deg_lon(LOCAL_LAT0))
    return shapely.transform(
        geoms,
        lambda c: np.column_stack(
            [c[:, 0] / kx + LOCAL_LON0, c[:, 1] / M_PER_DEG_LAT + LOCAL_LAT0]
        ),
    )


def m_per_deg_lon(lat: np.ndarray | float) -> np.ndarray | float:
    """Metres per degree of longitude at a latitude (spherical approximation)."""
    return 111_320.0 * np.cos(np.radians(lat))


def offset_lonlat(
    x: np.ndarray, y: np.ndarray, dx_m: np.ndarray, dy_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points moved by metric offsets (east, north); exact enough below a few kilometres."""
    return x + dx_m / m_per_deg_lon(y), y + dy_m / M_PER_DEG_LAT


def distance_m(
    x0: np.ndarray | float, y0: np.ndarray | float, x1: np.ndarray | float, y1: np.ndarray | float
) -> np.ndarray:
    """Equirectangular distance in metres between lon/lat points."""
    lat = (np.asarray(y0) + np.asarray(y1)) / 2
    return np.hypot(
        (np.asarray(x1) - x0) * m_per_deg_lon(lat), (np.asarray(y1) - y0) * M_PER_DEG_LAT
    )


def rectangles(
    x: np.ndarray, y: np.ndarray, width_m: np.ndarray, depth_m: np.ndarray, angle: np.ndarray
) -> np.ndarray:
    """Rotated rectangles centred on lon/lat points (counter-clockwise rings)."""
    hw, hd = width_m / 2, depth_m / 2
    dx = np.stack([-hw, hw, hw, -hw, -hw], axis=1)
    dy = np.stack([-hd, -hd, hd, hd, -hd], axis=1)
    return _polygons_from_local(x, y, dx, dy, angle)


def blobs(
    x: np.ndarray,
    y: np.ndarray,
    radius_m: np.ndarray,
    rng: np.random.Generator,
    vertices: int = 10,
    roughness: float = 0.35,
) -> np.ndarray:
    """Irregular star-shaped polygons (puddles, zones) around lon/lat points."""
    n = len(x)
    theta = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    radii = radius_m[:, None] * (1 + roughness * (rng.random((n, vertices)) - 0.5) * 2)
    dx, dy = radii * np.cos(theta), radii * np.sin(theta)
    dx, dy = np.concatenate([dx, dx[:, :1]], axis=1), np.concatenate([dy, dy[:, :1]], axis=1)
    return _polygons_from_local(x, y, dx, dy, np.zeros(n))


def _polygons_from_local(
    x: np.ndarray, y: np.ndarray, dx: np.ndarray, dy: np.ndarray, angle: np.ndarray
) -> np.ndarray:
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    rx, ry = dx * cos - dy * sin, dx * sin + dy * cos
    px, py = offset_lonlat(x[:, None], y[:, None], rx, ry)
    return shapely.polygons(np.stack([px, py], axis=-1))


def random_walks(
    x: np.ndarray,
    y: np.ndarray,
    length_m: np.ndarray,
    rng: np.random.Generator,
    heading: np.ndarray | None = None,
    max_steps: int = 8,
) -> np.ndarray:
    """Gently bending polylines of a given length starting at lon/lat points."""
    n = len(x)
    steps = np.clip((length_m / 120).astype(int) + 2, 2, max_steps)
    if heading is None:
        heading = rng.uniform(0, 2 * np.pi, n)
    turn = rng.normal(0, 0.25, (n, max_steps)).cumsum(axis=1)
    step_len = (length_m / steps)[:, None] * np.ones((1, max_steps))
    step_len[np.arange(max_steps)[None, :] >= steps[:, None]] = 0.0
    dx = (step_len * np.cos(heading[:, None] + turn)).cumsum(axis=1)
    dy = (step_len * np.sin(heading[:, None] + turn)).cumsum(axis=1)
    dx = np.concatenate([np.zeros((n, 1)), dx], axis=1)
    dy = np.concatenate([np.zeros((n, 1)), dy], axis=1)
    px, py = offset_lonlat(x[:, None], y[:, None], dx, dy)
    keep = np.arange(max_steps + 1)[None, :] <= steps[:, None]
    rows = np.broadcast_to(np.arange(n)[:, None], keep.shape)[keep]
    return shapely.linestrings(px[keep], py[keep], indices=rows)


def anchor_points(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One lon/lat point per geometry that lies on it (points, line midpoints, interior points)."""
    kinds = shapely.get_type_id(geoms)
    anchors = np.empty(len(geoms), dtype=object)
    is_point = kinds == 0
    is_line = np.isin(kinds, (1, 2, 5))
    other = ~(is_point | is_line)
    anchors[is_point] = geoms[is_point]
    anchors[is_line] = shapely.line_interpolate_point(geoms[is_line], 0.5, normalized=True)
    anchors[other] = shapely.point_on_surface(geoms[other])
    multipoint = kinds == 4
    anchors[multipoint] = shapely.get_geometry(geoms[multipoint], 0)
    return shapely.get_x(anchors), shapely.get_y(anchors)


_MULTI = {
    "MultiPoint": shapely.multipoints,
    "MultiLineString": shapely.multilinestrings,
    "MultiPolygon": shapely.multipolygons,
}
_TYPE_IDS = {
    "Point": 0,
    "LineString": 1,
    "Polygon": 3,
    "MultiPoint": 4,
    "MultiLineString": 5,
    "MultiPolygon": 6,
}
_SINGLE_IDS = {"Point": (0,), "LineString": (1,), "Polygon": (3,)}


def cast_geometries(geoms: np.ndarray, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Geometries as the manifest's type; returns (geometries, index of the source row).

    Multi* targets gather the parts of each row; single targets explode multi-part geometries
    into one row per part. Polygons become points through point_on_surface and lines through
    their boundary; rows with nothing of the right dimension are dropped.
    """
    geoms = np.asarray(geoms, dtype=object)
    kinds = shapely.get_type_id(geoms)
    if np.all(kinds == _TYPE_IDS[target]) and not np.any(shapely.is_empty(geoms)):
        return geoms, np.arange(len(geoms))  # already right (the usual case for generated rows)
    parts, rows = shapely.get_parts(geoms, return_index=True)
    parts, rows = _as_dimension(parts, rows, target.removeprefix("Multi"))
    if target not in _MULTI:
        return parts, rows
    present, inverse = np.unique(rows, return_inverse=True)
    if len(present) == 0:
        return np.empty(0, dtype=object), present
    return np.asarray(_MULTI[target](parts, indices=inverse), dtype=object), present


def _as_dimension(
    parts: np.ndarray, rows: np.ndarray, single: str
) -> tuple[np.ndarray, np.ndarray]:
    kinds = shapely.get_type_id(parts)
    if single == "Point":
        parts = parts.copy()
        other = kinds != 0
        parts[other] = shapely.point_on_surface(parts[other])
        return parts, rows
    if single == "LineString" and np.any(kinds == 3):
        parts = np.where(kinds == 3, shapely.boundary(parts), parts)
        parts, sub = shapely.get_parts(parts, return_index=True)
        rows, kinds = rows[sub], shapely.get_type_id(parts)
    keep = np.isin(kinds, _SINGLE_IDS[single]) & ~shapely.is_empty(parts)
    return parts[keep], rows[keep]
