"""The layer catalog: typed ``Layer`` objects loaded from the registry table ``ioc.layers``.

The registry, not a scan of the database, says what ioc serves. Manifests (``layers/catalog``)
are synced into it; tables registered by hand or created by publishing live there too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ioc.catalog.access import Principal, can_read
from ioc.db.connection import PgConn, Pool
from ioc.db.identifiers import qualified
from ioc.errors import LayerNotFound


@dataclass(frozen=True)
class Attribute:
    """One attribute (column) of a layer."""

    name: str
    type: str
    label_vi: str
    label_en: str
    unit: str | None = None
    required: bool = False
    values: tuple[Any, ...] | None = None
    range: tuple[float, float] | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Attribute:
        label = spec.get("label") or {}
        return cls(
            name=spec["name"],
            type=spec["type"],
            label_vi=label.get("vi", spec["name"]),
            label_en=label.get("en", spec["name"]),
            unit=spec.get("unit"),
            required=bool(spec.get("required", False)),
            values=tuple(spec["values"]) if spec.get("values") else None,
            range=tuple(spec["range"]) if spec.get("range") else None,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Layer:
    """A served layer: where its data is and what the catalog says about it."""

    id: str
    schema: str
    table: str
    geometry_column: str
    id_column: str
    geometry_type: str
    srid: int
    title_vi: str
    title_en: str
    description_vi: str
    description_en: str
    domain: str
    department: str
    access: str
    cadence: str
    origin: str
    attributes: tuple[Attribute, ...]
    time_column: str | None
    id_attribute: str | None
    style: dict[str, Any]
    source: dict[str, Any]
    zoom_min: int
    zoom_max: int
    keywords: tuple[str, ...]
    metadata: dict[str, Any]
    feature_count: int
    extent: tuple[float, float, float, float] | None
    version: int
    last_update: datetime | None
    updated_at: datetime | None = None
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def table_sql(self) -> str:
        """The quoted, schema-qualified table."""
        return qualified(self.schema, self.table)

    @property
    def columns(self) -> dict[str, Attribute]:
        return {a.name: a for a in self.attributes}

    def attribute(self, name: str) -> Attribute | None:
        """The attribute called ``name``, or None."""
        return self.columns.get(name)


LOAD_SQL = (
    "SELECT id, schema_name, table_name, geometry_column, id_column, geometry_type, srid, title_vi,"
    " title_en, description_vi, description_en, domain, department, access, cadence, origin,"
    " manifest, metadata, feature_count, extent, version, last_update, updated_at"
    " FROM ioc.layers WHERE deleted_at IS NULL ORDER BY domain, id"
)


def layer_from_row(row: Any) -> Layer:
    """Build a Layer from a registry row (asyncpg Record or dict)."""
    manifest = row["manifest"]
    if isinstance(manifest, str):
        manifest = json.loads(manifest)
    metadata = row["metadata"]
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    zoom = manifest.get("zoom") or {}
    extent = row["extent"]
    return Layer(
        id=row["id"],
        schema=row["schema_name"],
        table=row["table_name"],
        geometry_column=row["geometry_column"],
        id_column=row["id_column"],
        geometry_type=row["geometry_type"],
        srid=row["srid"],
        title_vi=row["title_vi"],
        title_en=row["title_en"],
        description_vi=row["description_vi"],
        description_en=row["description_en"],
        domain=row["domain"],
        department=row["department"],
        access=row["access"],
        cadence=row["cadence"],
        origin=row["origin"],
        attributes=tuple(Attribute.from_spec(a) for a in manifest.get("attributes", [])),
        time_column=manifest.get("time_attribute"),
        id_attribute=manifest.get("id_attribute"),
        style=manifest.get("style") or {},
        source=manifest.get("source") or {},
        zoom_min=int(zoom.get("min", 0)),
        zoom_max=int(zoom.get("max", 22)),
        keywords=tuple(manifest.get("keywords") or ()),
        metadata=metadata or {},
        feature_count=row["feature_count"],
        extent=tuple(extent) if extent else None,  # type: ignore[arg-type]
        version=row["version"],
        last_update=row["last_update"],
        updated_at=row.get("updated_at"),
        manifest=manifest,
    )


class Catalog:
    """The layers served by this process, by id."""

    def __init__(self, layers: Iterable[Layer] = ()) -> None:
        self._layers = {layer.id: layer for layer in layers}

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._layers.values())

    def get(self, layer_id: str, principal: Principal) -> Layer:
        """The layer, or LayerNotFound when unknown or not readable (the same answer)."""
        layer = self._layers.get(layer_id)
        if layer is None or not can_read(principal, layer):
            raise LayerNotFound(f"There is no layer '{layer_id}'.", parameter="collectionId")
        return layer

    def find(self, layer_id: str) -> Layer | None:
        """The layer whatever its access level (callers check access themselves), or None."""
        return self._layers.get(layer_id)

    def visible(self, principal: Principal) -> list[Layer]:
        """Layers the principal may read."""
        return [layer for layer in self._layers.values() if can_read(principal, layer)]

    def domains(self) -> list[str]:
        return sorted({layer.domain for layer in self._layers.values()})

    def replaced(self, ids: Iterable[str], fresh: dict[str, Layer]) -> Catalog | None:
        """This catalog with the layers ``ids`` replaced by ``fresh`` (absent there: removed);
        None when a layer of ``fresh`` is new or changed domain (its place in the order, by
        domain, needs a whole reload)."""
        if any(
            layer_id not in self._layers or self._layers[layer_id].domain != layer.domain
            for layer_id, layer in fresh.items()
        ):
            return None
        gone = set(ids) - fresh.keys()
        return Catalog(fresh.get(la.id, la) for la in self._layers.values() if la.id not in gone)


async def load_catalog(pool: Pool) -> Catalog:
    """Read the registry (asyncpg pool): one query, no table scan."""
    rows = await pool.fetch(LOAD_SQL)
    return Catalog(layer_from_row(row) for row in rows)


RELOAD_SQL = LOAD_SQL.replace(" ORDER BY domain, id", " AND id = ANY($1::text[])")


async def read_layers(pool: Pool, ids: Iterable[str]) -> dict[str, Layer]:
    """The registry rows of ``ids`` as layers (deleted and unknown ids absent): after a write
    to a few layers, one small query instead of the whole registry (~400 kB of manifests)."""
    rows = await pool.fetch(RELOAD_SQL, sorted(set(ids)))
    return {row["id"]: layer_from_row(row) for row in rows}


def load_catalog_sync(conn: PgConn) -> Catalog:
    """Read the registry with a psycopg2 connection (commands)."""
    from psycopg2.extras import RealDictCursor

    with conn.cursor(cursor_factory=RealDictCursor) as cur:
        cur.execute(LOAD_SQL)
        rows = cur.fetchall()
    conn.rollback()
    return Catalog(layer_from_row(row) for row in rows)


def get_layer_doc(layer: Layer) -> dict[str, Any]:
    """A layer's public description: manifest, schema, extent, counts, licence."""
    return {
        "id": layer.id,
        "title": {"vi": layer.title_vi, "en": layer.title_en},
        "description": {"vi": layer.description_vi, "en": layer.description_en},
        "domain": layer.domain,
        "department": layer.department,
        "access": layer.access,
        "cadence": layer.cadence,
        "origin": layer.origin,
        "geometry": {"type": layer.geometry_type, "srid": layer.srid},
        "attributes": [
            {
                "name": a.name,
                "type": a.type,
                "label": {"vi": a.label_vi, "en": a.label_en},
                "unit": a.unit,
                "required": a.required,
                "values": list(a.values) if a.values else None,
            }
            for a in layer.attributes
        ],
        "time_attribute": layer.time_column,
        "id_attribute": layer.id_attribute,
        "zoom": {"min": layer.zoom_min, "max": layer.zoom_max},
        "style": layer.style,
        "source": layer.source,
        "keywords": list(layer.keywords),
        "extent": {
            "bbox": [list(layer.extent)],
            "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
        }
        if layer.extent
        else None,
        "feature_count": layer.feature_count,
        "version": layer.version,
        "last_update": layer.last_update.isoformat() if layer.last_update else None,
        "metadata": layer.metadata,
    }


WATCH_SQL = "SELECT id, version, updated_at FROM ioc.layers WHERE deleted_at IS NULL"


class CatalogWatcher:
    """Notices registry changes made by other processes (another worker's publish, a layer
    registered from the command line, a sync of the manifests).

    It re-reads ``id, version, updated_at`` of the registry at most every ``interval`` seconds
    and reloads the catalog when anything differs. Polling was chosen over LISTEN/NOTIFY: no
    trigger or dedicated connection, one ~200-row query per interval per process; the price is
    that a change made elsewhere is seen up to ``interval`` seconds late.
    """

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self._checked = float("-inf")  # the first call always checks
        self._lock = asyncio.Lock()

    def due(self) -> bool:
        return time.monotonic() - self._checked >= self.interval

    def checked(self) -> None:
        """Count the catalog as fresh now (the caller has just reloaded it)."""
        self._checked = time.monotonic()

    async def refresh(self, pool: Pool, catalog: Catalog) -> tuple[Catalog, set[str]] | None:
        """A reloaded catalog and the ids that changed, or None when nothing changed or the
        last check is recent. Concurrent callers do not queue up behind a running check."""
        if not self.due() or self._lock.locked():
            return None
        async with self._lock:
            rows = await pool.fetch(WATCH_SQL)
            self._checked = time.monotonic()
            current = {row["id"]: (row["version"], row["updated_at"]) for row in rows}
            known = {layer.id: (layer.version, layer.updated_at) for layer in catalog}
            if current == known:
                return None
            changed = {i for i in current.keys() | known.keys() if current.get(i) != known.get(i)}
            return await load_catalog(pool), changed
