"""Vector tile settings (``IOC_TILE_*``): cache, generalisation, caps and aggregation.

Built once (by the app or a command) and passed down; nothing here reads the environment at
import time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ioc.settings import PROJECT_ROOT

# Bump when the tile SQL changes what a tile contains: cached tiles of an older revision are
# then never served (the revision is part of every cache key).
SQL_REVISION = 4


class TileSettings(BaseSettings):
    """How tiles are rendered and cached."""

    model_config = SettingsConfigDict(env_prefix="IOC_TILE_", env_file=".env", extra="ignore")

    cache: Literal["on", "off"] = Field(
        default="on", description="'off' turns every tile cache off (memory and disk), to measure."
    )
    cache_dir: Path = Field(
        default=PROJECT_ROOT / "tiles" / "cache",
        description="Shared on-disk tile cache (all processes).",
    )
    disk_cache: bool = Field(default=True, description="Use the on-disk cache (when cache=on).")
    disk_max_mb: int = Field(
        default=10_240,
        ge=1,
        description="Disk cache budget in MiB. Past it, a background sweep deletes the zoom "
        "levels of layer sets written least recently, down to 80 % of it.",
    )
    memory_mb: int = Field(default=256, ge=0, description="In-process LRU size in MiB.")
    max_features: int = Field(
        default=20_000, ge=1, description="Feature cap per layer per tile; hits are reported."
    )
    cluster_threshold: int = Field(
        default=50_000,
        ge=1,
        description="Point layers with more features are aggregated at low zoom.",
    )
    cluster_max_zoom: int = Field(
        default=13, ge=0, le=24, description="Aggregate clustered layers up to this zoom."
    )
    cluster_grid: int = Field(
        default=32, ge=1, le=512, description="Aggregation cells per tile side (a power of two)."
    )
    min_feature_px: float = Field(
        default=0.5,
        ge=0,
        description="Lines/polygons smaller than this many pixels both ways are dropped.",
    )
    visible_px: float = Field(
        default=1.0,
        gt=0,
        description="Up to generalise_max_zoom, a line or polygon is drawn from the zoom where "
        "its bounding box is this many pixels wide or tall.",
    )
    generalise_max_zoom: int = Field(
        default=13,
        ge=0,
        le=24,
        description="Lines and polygons are read pre-simplified, visible ones only, up to this "
        "zoom.",
    )
    merge_px: float = Field(
        default=2.0,
        ge=0,
        description="Up to generalise_max_zoom, a polygon visible but smaller than this many "
        "pixels both ways is drawn merged into its 16-pixel cell's block (its members' pixels, "
        "their count and dominant style.by value); 0 draws every visible polygon alone.",
    )
    simplify_px: float = Field(
        default=0.25, ge=0, description="Simplification tolerance in pixels (256 px tiles)."
    )
    extent: int = Field(default=4096, ge=256, le=16384, description="MVT extent.")
    buffer: int = Field(default=64, ge=0, le=1024, description="MVT buffer, in extent units.")
    gzip_level: int = Field(
        default=1,
        ge=0,
        le=3,
        description="ISA-L gzip level of tiles (0-3; compressed once, when rendered). 1 costs "
        "a third of zlib's level 3 for ~4 % more bytes; it matters when the cache "
        "is off.",
    )
    max_age: int = Field(default=60, ge=0, description="Cache-Control max-age of public tiles.")
    debug_headers: bool = Field(
        default=False,
        description="Send X-Tile-Cache (memory, disk, database) with every tile. Off in "
        "production: it tells a caller whether someone else fetched a tile lately.",
    )

    @field_validator("cluster_grid")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        # Cells must nest across zooms and align on tile edges, so that every point lands in
        # exactly one cell of exactly one tile.
        if value & (value - 1):
            raise ValueError("cluster_grid must be a power of two")
        return value

    @property
    def enabled(self) -> bool:
        """True when tiles are cached at all."""
        return self.cache == "on"

    def fingerprint(self) -> str:
        """A short hash of everything that changes a tile's bytes (part of cache keys)."""
        parts = (
            SQL_REVISION,
            self.max_features,
            self.cluster_threshold,
            self.cluster_max_zoom,
            self.cluster_grid,
            self.min_feature_px,
            self.visible_px,
            self.merge_px,
            self.generalise_max_zoom,
            self.simplify_px,
            self.extent,
            self.buffer,
            self.gzip_level,
        )
        return hashlib.sha1(repr(parts).encode()).hexdigest()[:8]
