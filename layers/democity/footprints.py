"""Building footprints and land parcels: street-facing rectangles in the layer's SRID."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from layers.democity.context import CityContext
from layers.democity.geo import offset_lonlat, rectangles
from layers.democity.handmade import Special, attr, put
from layers.democity.sampling import sample_points
from layers.democity.synth import RawBatch, chunk_sizes
from layers.manifest import LayerManifest


def _footprints(ctx: CityContext, m: LayerManifest, total: int, parcels: bool) -> Special:
    """Street-facing rectangles: narrow deep tube houses in the core, larger lots outside."""

    def batches(rng: np.random.Generator) -> Iterator[RawBatch]:
        for n in chunk_sizes(total):
            big = rng.random(n) < (0.05 if parcels else 0.08)
            front = np.where(
                big, rng.uniform(20, 60, n), rng.lognormal(np.log(6 if not parcels else 8), 0.35, n)
            )
            depth = np.where(
                big, rng.uniform(20, 60, n), rng.uniform(12, 26, n) * (1.3 if parcels else 1.0)
            )
            place = sample_points(
                ctx,
                rng,
                n,
                m.demo_spec.weight,
                offset_m=(3.0, 8.0),
                road_share=0.95,
                only_networked=True,
            )
            # Put the footprint behind the street line: centre pushed back by half its depth.
            side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
            x, y = offset_lonlat(
                place.x,
                place.y,
                -side * np.sin(place.bearing) * depth / 2,
                side * np.cos(place.bearing) * depth / 2,
            )
            geoms = rectangles(x, y, front, depth, place.bearing)
            known: dict[str, object] = {}
            centre = np.hypot(x - 106.698, y - 10.772) * 105  # km from Bến Thành
            floors = np.clip(
                np.round(rng.lognormal(np.log(np.maximum(4.5 - centre / 6, 1.5)), 0.45, n)), 1, 12
            )
            floors = np.where(big & (rng.random(n) < 0.4), rng.integers(8, 40, n), floors)
            put(known, attr(m, r"floor|storey|level", ("integer", "number")), floors)
            put(
                known,
                attr(m, r"height", ("integer", "number")),
                np.round(floors * rng.uniform(3.2, 3.8, n), 1),
            )
            if parcels:
                put(
                    known,
                    attr(m, r"sheet|map_no|to_ban_do", ("integer",)),
                    rng.integers(1, 120, n).astype(float),
                )
                put(
                    known,
                    attr(m, r"parcel_no|plot_no|thua", ("integer",)),
                    rng.integers(1, 900, n).astype(float),
                )
            yield RawBatch(geoms, known, place.ward, place.street)

    what = "land parcels" if parcels else "building footprints"
    return Special(
        batches,
        total,
        True,
        f"Synthetic {what} facing streets, generated in WGS 84 and projected "
        f"to the layer's SRID; not cadastral data.",
    )


def buildings(ctx: CityContext, m: LayerManifest, total: int) -> Special:
    """Building footprints."""
    return _footprints(ctx, m, total, parcels=False)


def parcels(ctx: CityContext, m: LayerManifest, total: int) -> Special:
    """Land parcels."""
    return _footprints(ctx, m, total, parcels=True)
