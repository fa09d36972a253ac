"""Building the low-zoom tables of layers (sql/0012): point aggregates, visible shapes and the
blocks of small polygons (sql/0022).

The database keeps them current on every write (statement triggers); this module (re)builds
them from a layer's rows with the tile settings in force, after a seed or when the settings
change. Tile SQL (:mod:`tiles.sql`) reads them only when they were built with its settings.
"""

from __future__ import annotations

from collections.abc import Iterable

from ioc.db.connection import PgConn
from tiles.settings import TileSettings

BUILD_SQL = "SELECT ioc.tile_lowzoom_build(%s, %s, %s, %s, %s, %s, %s)"


def build_args(layer_id: str, settings: TileSettings) -> tuple:
    """Arguments of BUILD_SQL: the settings that shape the low-zoom rows."""
    return (
        layer_id,
        settings.cluster_grid,
        settings.cluster_max_zoom,
        settings.generalise_max_zoom,
        settings.visible_px,
        settings.simplify_px,
        settings.merge_px,
    )


def build_layers(
    conn: PgConn, settings: TileSettings, layer_ids: Iterable[str] | None = None
) -> dict[str, str | None]:
    """Rebuild the low-zoom rows of these layers (all live layers by default), one commit per
    layer; returns each layer's kind ('points', 'shapes', 'none', or None without a table)."""
    with conn.cursor() as cur:
        if layer_ids is None:
            cur.execute("SELECT id FROM ioc.layers WHERE deleted_at IS NULL ORDER BY id")
            layer_ids = [row[0] for row in cur.fetchall()]
    conn.commit()
    kinds: dict[str, str | None] = {}
    for layer_id in layer_ids:
        with conn.cursor() as cur:
            cur.execute(BUILD_SQL, build_args(layer_id, settings))
            row = cur.fetchone()
            kinds[layer_id] = row[0] if row else None
        conn.commit()
    return kinds
