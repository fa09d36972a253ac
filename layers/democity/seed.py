"""Seeding every catalog layer: administrative units first, then real files, hand-tuned and
generic synthetic layers; one transaction per layer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psycopg2.extensions import connection as Connection

from ioc.db.tables import DATA_SCHEMA
from layers.democity import special
from layers.democity.admin import ADMIN_DATASETS
from layers.democity.context import CityContext, layer_rng
from layers.democity.sources import find_dataset, licence_of, load_layer_frame
from layers.democity.synth import RawBatch, finish_batch, generic_batches, synthetic_note
from layers.democity.writer import write_layer
from layers.manifest import LayerManifest

SCALES = ("demo", "city")
ADMIN_STEMS = frozenset(ADMIN_DATASETS.values())


@dataclass(frozen=True)
class LayerSeedResult:
    """What seeding did to one layer."""

    count: int
    synthetic: bool  # geometry or attribute values were generated, not read from a real file
    note: str  # one sentence on where the rows come from


@dataclass
class _Plan:
    batches: Callable[[np.random.Generator], Iterator[RawBatch]]
    total: int
    synthetic: bool
    note: str | Callable[[set[str]], str]


def target_count(m: LayerManifest, scale: str) -> int:
    """Number of synthetic features for a scale: demo.count, or city_count (else 5 × count)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r} (expected one of {', '.join(SCALES)})")
    return (
        m.demo_spec.count if scale == "demo" else (m.demo_spec.city_count or m.demo_spec.count * 5)
    )


def _stem(m: LayerManifest) -> str | None:
    return m.source.dataset or ADMIN_DATASETS.get(m.id)


def _order(m: LayerManifest) -> tuple[int, str]:
    stem = _stem(m)
    return (0 if stem == "wards_2025" else 1 if stem in ADMIN_STEMS else 2, m.id)


def _plan(ctx: CityContext, m: LayerManifest, scale: str) -> _Plan:
    stem = _stem(m)
    if stem in ADMIN_STEMS:
        units = ctx.admin_units(stem)
        table = units.table
        batch = RawBatch(units.geoms, {c: table[c] for c in table.columns})
        return _Plan(lambda rng: iter([batch]), len(units.geoms), units.synthetic, units.note)
    builder = special.SPECIAL.get(m.id)
    if builder is not None:
        made = builder(ctx, m, target_count(m, scale))
        return _Plan(made.batches, made.total, made.synthetic, made.note)
    path = find_dataset(ctx.data_dir, stem)
    if path is not None and stem is not None:  # find_dataset is None without a stem
        table, geoms = load_layer_frame(
            path, [a.name for a in m.attributes], m.source.filter, m.geometry.type
        )
        batch = RawBatch(geoms, {c: table[c] for c in table.columns})

        def note(generated: set[str]) -> str:
            extra = f"; generated: {', '.join(sorted(generated))}" if generated else ""
            return f"Loaded from {stem} ({licence_of(stem)}){extra}."

        return _Plan(lambda rng: iter([batch]), len(geoms), False, note)
    total = target_count(m, scale)
    return _Plan(
        lambda rng: generic_batches(ctx, m, rng, total),
        total,
        True,
        synthetic_note(ctx, m, total, stem),
    )


def seed_layer(
    conn: Connection,
    ctx: CityContext,
    m: LayerManifest,
    scale: str,
    progress: Callable[[str, int, int], None] | None,
    schema: str = DATA_SCHEMA,
) -> LayerSeedResult:
    """Replace one layer's rows with real or generated features (one transaction)."""
    plan = _plan(ctx, m, scale)
    rng = layer_rng(ctx.seed, m.id)
    generated: set[str] = set()
    start = [0]

    def batches() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        for raw in plan.batches(rng):
            columns, geoms = finish_batch(ctx, m, rng, raw, start[0], generated)
            start[0] += len(geoms)
            yield columns, geoms

    count = write_layer(conn, m, batches(), plan.total, progress, schema)
    note = plan.note(generated) if callable(plan.note) else plan.note
    return LayerSeedResult(count, plan.synthetic or bool(generated), note)


def seed_city(
    conn: Connection,
    manifests: list[LayerManifest],
    *,
    scale: str = "demo",
    data_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    seed: int = 2025,
) -> dict[str, LayerSeedResult]:
    """Fill every layer table of the catalog with the demo city; returns a result per layer.

    Real files of ``data_dir`` (IOC_DATA_DIR) are used where a layer names one; everything else
    is generated deterministically from ``seed`` (same seed, same rows). Each layer table is
    truncated first and committed on its own, so an interrupted run leaves whole layers.
    """
    return seed_layers(
        conn, manifests, scale=scale, data_dir=data_dir, progress=progress, seed=seed
    )


def seed_layers(
    conn: Connection,
    manifests: list[LayerManifest],
    *,
    scale: str = "demo",
    data_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    seed: int = 2025,
    schema: str = DATA_SCHEMA,
) -> dict[str, LayerSeedResult]:
    """:func:`seed_city` into the layer tables of any schema (tests use their own)."""
    for m in manifests:
        target_count(m, scale)  # validate the scale before touching any table
    ctx = CityContext.build(Path(data_dir) if data_dir is not None else None, seed)
    return {
        m.id: seed_layer(conn, ctx, m, scale, progress, schema)
        for m in sorted(manifests, key=_order)
    }
