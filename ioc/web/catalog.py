"""Browsing the catalog as people do: search by name with or without diacritics, filters by
domain, department, access and update cadence, Vietnamese names, and the ways to use a layer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any, get_args
from urllib.parse import quote

from ioc.addresses.normalise import fold
from ioc.catalog.access import ACCESS_LEVELS
from ioc.catalog.layers import Layer
from ioc.errors import InvalidParameter
from layers.manifest import DEPARTMENTS, DOMAINS, Cadence

CADENCES: tuple[str, ...] = get_args(Cadence)
CADENCE_NAMES: dict[str, dict[str, str]] = {
    "realtime": {"vi": "Thời gian thực", "en": "Real time"},
    "hourly": {"vi": "Hằng giờ", "en": "Hourly"},
    "daily": {"vi": "Hằng ngày", "en": "Daily"},
    "weekly": {"vi": "Hằng tuần", "en": "Weekly"},
    "monthly": {"vi": "Hằng tháng", "en": "Monthly"},
    "quarterly": {"vi": "Hằng quý", "en": "Quarterly"},
    "yearly": {"vi": "Hằng năm", "en": "Yearly"},
    "static": {"vi": "Ít thay đổi", "en": "Static"},
}
ACCESS_NAMES: dict[str, dict[str, str]] = {
    "public": {"vi": "Công khai", "en": "Public"},
    "internal": {"vi": "Nội bộ", "en": "Internal"},
    "restricted": {"vi": "Hạn chế", "en": "Restricted"},
}
QUERY_MAX = 200


def name_of(names: dict[str, dict[str, str]], key: str) -> dict[str, str]:
    """Vietnamese and English names of a domain, department, cadence or access level; a key
    the tables do not know (a department created later) names itself."""
    return names.get(key) or {"vi": key, "en": key}


def domain_name(domain: str) -> dict[str, str]:
    return name_of(DOMAINS, domain)


def department_name(department: str) -> dict[str, str]:
    return name_of(DEPARTMENTS, department)


@dataclass(frozen=True)
class CatalogFilters:
    """What the catalog page was asked for; every field optional."""

    q: str | None = None
    domain: str | None = None
    department: str | None = None
    access: str | None = None
    cadence: str | None = None

    @classmethod
    def parse(cls, **given: str | None) -> CatalogFilters:
        """Blank fields are absent (an empty form field); access and cadence must be known."""
        values = {k: (v.strip() or None) if v else None for k, v in given.items()}
        q = values.get("q")
        if q and len(q) > QUERY_MAX:
            raise InvalidParameter(
                f"The search text is longer than {QUERY_MAX} characters.", parameter="q"
            )
        for name, allowed in (("access", ACCESS_LEVELS), ("cadence", CADENCES)):
            value = values.get(name)
            if value is not None and value not in allowed:
                raise InvalidParameter(
                    f"Unknown {name} '{value}': use one of {', '.join(allowed)}.", parameter=name
                )
        return cls(**values)

    @property
    def active(self) -> bool:
        return any((self.q, self.domain, self.department, self.access, self.cadence))


def _haystack(layer: Layer) -> tuple[str, str]:
    """Folded text a search looks in: the titles first, then id, keywords and domain names."""
    titles = fold(f"{layer.title_vi} {layer.title_en}")
    domain = domain_name(layer.domain)
    rest = fold(" ".join([layer.id.replace("_", " "), *layer.keywords, domain["vi"], domain["en"]]))
    return titles, rest


def search_layers(layers: list[Layer], filters: CatalogFilters) -> list[Layer]:
    """The layers matching every filter; with a search text, those whose titles hold every
    word of it come first, then those matching only by id, keyword or domain."""
    found = [
        la
        for la in layers
        if (filters.domain is None or la.domain == filters.domain)
        and (filters.department is None or la.department == filters.department)
        and (filters.access is None or la.access == filters.access)
        and (filters.cadence is None or la.cadence == filters.cadence)
    ]
    words = fold(filters.q or "").split()
    if not words:
        return found
    by_title, other = [], []
    for layer in found:
        titles, rest = _haystack(layer)
        if all(w in titles for w in words):
            by_title.append(layer)
        elif all(w in titles or w in rest for w in words):
            other.append(layer)
    return by_title + other


def facets(layers: list[Layer]) -> dict[str, list[dict[str, Any]]]:
    """The values each filter may take among ``layers``, with their names and counts."""
    tables = {
        "domain": DOMAINS,
        "department": DEPARTMENTS,
        "access": ACCESS_NAMES,
        "cadence": CADENCE_NAMES,
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for field_name, names in tables.items():
        counts = Counter(getattr(la, field_name) for la in layers)
        order = list(names) + sorted(set(counts) - set(names))
        out[field_name] = [
            {"value": v, "name": name_of(names, v), "count": counts[v]} for v in order if counts[v]
        ]
    return out


def domain_summaries(layers: list[Layer]) -> list[dict[str, Any]]:
    """Per domain the caller sees: names, layers, features and the latest update."""
    rows: dict[str, dict[str, Any]] = {}
    for layer in layers:
        row = rows.setdefault(
            layer.domain,
            {
                "id": layer.domain,
                "name": domain_name(layer.domain),
                "layers": 0,
                "features": 0,
                "last_update": None,
            },
        )
        row["layers"] += 1
        row["features"] += layer.feature_count or 0
        row["last_update"] = latest(row["last_update"], updated(layer))
    order = {domain: i for i, domain in enumerate(DOMAINS)}
    return sorted(rows.values(), key=lambda r: (order.get(r["id"], len(order)), r["id"]))


def updated(layer: Layer) -> datetime | None:
    """When the layer's data last changed (its last publish or write)."""
    return layer.last_update or layer.updated_at


def recently_updated(layers: list[Layer], n: int = 6) -> list[Layer]:
    """The ``n`` layers whose data changed last, newest first."""
    dated = [(when, la) for la in layers if (when := updated(la)) is not None]
    return [la for _, la in sorted(dated, key=lambda pair: pair[0], reverse=True)[:n]]


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max((d for d in (a, b) if d is not None), default=None)


def usage(layer: Layer, base: str) -> dict[str, str]:
    """The ways to use a layer, as URLs and snippets to copy."""
    collection = f"{base}/collections/{quote(layer.id)}"
    return {
        "geojson": f"{collection}/items?f=json",
        "items_html": f"{collection}/items?f=html",
        "collection_html": f"{collection}?f=html",
        "tilejson": f"{base}/tiles/{quote(layer.id)}/tilejson.json",
        "tiles": f"{base}/tiles/{quote(layer.id)}/{{z}}/{{x}}/{{y}}.pbf",
        "preview": f"{base}/maps/preview/{quote(layer.id)}",
        # GDAL's OGC API – Features driver; QGIS takes the same URL (WFS / OGC API – Features).
        "gdal": f"OAPIF:{base}",
        "ogr2ogr": f'ogr2ogr -f GPKG {layer.id}.gpkg "OAPIF:{base}" {layer.id}',
        "qgis": collection,
        "embed": (
            f'<iframe src="{base}/maps/preview/{quote(layer.id)}?embed=1" '
            f'width="600" height="400" title="{escape(layer.title_vi)}" loading="lazy"></iframe>'
        ),
    }
