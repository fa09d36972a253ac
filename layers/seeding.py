"""Seeding the database with the demo city: sync the catalog, fill layers, record statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ioc.addresses.index import build_address_index
from ioc.addresses.registry import AddressSettings
from ioc.db.connection import PgConn
from layers import registry
from layers.manifest import load_catalog

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

SEED_KEY = "seed"


def _empty_layers(conn, layer_ids: list[str]) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT value FROM ioc.meta WHERE key = %s", (SEED_KEY,))
        seeded = cur.fetchone() is not None
        cur.execute(
            "SELECT id FROM ioc.layers WHERE id = ANY(%s) AND feature_count = 0", (layer_ids,)
        )
        empty = [row[0] for row in cur.fetchall()]
    conn.rollback()
    return layer_ids if not seeded else empty


def seed_database(
    conn: PgConn,
    *,
    addresses: AddressSettings,
    scale: str = "demo",
    data_dir: Path | None = None,
    only_if_empty: bool = False,
    progress: Progress | None = None,
    seed: int = 2025,
) -> dict[str, int] | None:
    """Build the demo city; None when ``only_if_empty`` and every layer already has data."""
    from layers.democity import seed_city

    manifests = load_catalog()
    registry.sync_manifests(conn, manifests)
    if only_if_empty and not _empty_layers(conn, [m.id for m in manifests]):
        return None

    tasks: dict[str, TaskID] = {}
    overall = progress.add_task("layers", total=len(manifests)) if progress else None

    def report(layer_id: str, done: int, total: int) -> None:
        if progress is None:
            return
        if layer_id not in tasks:
            tasks[layer_id] = progress.add_task(f"  {layer_id}", total=max(total, 1))
        progress.update(tasks[layer_id], completed=done, total=max(total, 1))
        if done >= total and overall is not None:
            progress.update(overall, description=f"layers (last: {layer_id})")

    results = seed_city(conn, manifests, scale=scale, data_dir=data_dir, progress=report, seed=seed)
    counts: dict[str, int] = {}
    for manifest in manifests:
        result = results.get(manifest.id)
        meta = {"synthetic": result.synthetic, "note": result.note} if result else {}
        counts[manifest.id] = registry.refresh_stats(conn, manifest.id, metadata=meta)
        if progress is not None and overall is not None:
            progress.advance(overall)
            if manifest.id in tasks:
                progress.remove_task(tasks.pop(manifest.id))
    # The address registry, search names and feature links.
    build_address_index(conn, settings=addresses)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ioc.meta (key, value) VALUES (%s, %s) ON CONFLICT (key)"
            " DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            (
                SEED_KEY,
                json.dumps(
                    {"scale": scale, "seed": seed, "data_dir": str(data_dir) if data_dir else None}
                ),
            ),
        )
    conn.commit()
    return counts
