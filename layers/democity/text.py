"""Text attribute values: codes, names, addresses and phrases that read like the city's own data.

Rules go by attribute name (the catalog's naming is consistent: ``*_code``, ``*_no``, ``name``,
``address``, ``street`` …), then by layer; a layer's title gives the noun for generated names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from layers.democity.geo import reproject
from layers.democity.names import PERSON_FAMILY, PERSON_GIVEN, PERSON_MIDDLE, STREETS, ascii_fold
from layers.democity.vocab import (
    COMPANY_FORMS,
    COMPANY_WORDS,
    DOCUMENT_SUFFIX,
    METRO_STATIONS,
    NAME_NOUNS,
    PLACE_NAMES,
    VOCAB,
)
from layers.manifest import DEPARTMENTS, AttributeSpec, LayerManifest

if TYPE_CHECKING:
    from layers.democity.context import CityContext, FeatureContext


# Unique 10-digit codes: i ↦ 1e9 + (A·i + B) mod 9e9 is a bijection on 0 … 9e9-1 because
# A is prime to 9e9 = 2⁹·3²·5⁹; B comes from the layer's random generator.
CODE_MULTIPLIER = 2_654_435_761
CODE_SPACE = 9_000_000_000


def unique_codes(start: int, n: int, offset: int) -> np.ndarray:
    """Distinct 10-digit strings for rows start … start+n-1 (never starting with 0)."""
    i = np.arange(start, start + n, dtype=np.int64)
    code = 1_000_000_000 + (CODE_MULTIPLIER * (i % CODE_SPACE) + offset) % CODE_SPACE
    return code.astype(str).astype(object)


def id_prefix(layer_id: str) -> str:
    """Upper-case initials of a layer id ('flood_points' → 'FP')."""
    return "".join(part[0] for part in layer_id.split("_") if part).upper()[:4] or "X"


def sequence_ids(prefix: str, start: int, n: int) -> np.ndarray:
    """'FP-000001', 'FP-000002', … for rows start … start+n-1."""
    return np.array([f"{prefix}-{i:06d}" for i in range(start + 1, start + n + 1)], dtype=object)


def layer_ids(m: LayerManifest, name: str, start: int, n: int) -> np.ndarray:
    """Unique identifiers of a layer's own features, shaped by what they name."""
    if name in ("line_no", "route_no"):
        return np.array([str(i) for i in range(start + 1, start + n + 1)], dtype=object)
    if name == "tax_code":  # Vietnamese enterprise tax codes: 10 digits, HCMC ones start with 03
        return np.array(
            [f"03{i:08d}" for i in range(start + 1_000_001, start + n + 1_000_001)], dtype=object
        )
    return sequence_ids(id_prefix(m.id), start, n)


def house_numbers(n: int, rng: np.random.Generator) -> np.ndarray:
    """House numbers in HCMC style: '125', '45/12', '12A', '210/3/8'."""
    main = rng.zipf(1.5, n) % 480 + 1
    alley, sub = rng.integers(1, 60, n), rng.integers(1, 25, n)
    kind = rng.random(n)
    letter = np.array(list("ABCD"), dtype=object)[rng.integers(0, 4, n)]
    out = np.empty(n, dtype=object)
    out[:] = [
        f"{m}/{a}/{s}"
        if k < 0.1
        else f"{m}/{a}"
        if k < 0.45
        else f"{m}{lt}"
        if k < 0.52
        else str(m)
        for m, a, s, k, lt in zip(main, alley, sub, kind, letter, strict=True)
    ]
    return out


def person_names(n: int, rng: np.random.Generator) -> np.ndarray:
    """Vietnamese full names."""
    out = np.empty(n, dtype=object)
    out[:] = [
        f"{PERSON_FAMILY[a]} {PERSON_MIDDLE[b]} {PERSON_GIVEN[c]}"
        for a, b, c in zip(
            rng.integers(0, len(PERSON_FAMILY), n),
            rng.integers(0, len(PERSON_MIDDLE), n),
            rng.integers(0, len(PERSON_GIVEN), n),
            strict=True,
        )
    ]
    return out


def streets_for(street: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The given street names, a random real HCMC street where none is known."""
    out = np.array(street, dtype=object)
    missing = np.array([s is None or s != s for s in out], dtype=bool)
    out[missing] = np.array(STREETS, dtype=object)[
        rng.integers(0, len(STREETS), int(missing.sum()))
    ]
    return out


def pick(values: tuple[str, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """Values drawn from a vocabulary, the first ones more often."""
    p = 1.0 / (np.arange(len(values)) + 1.5)
    return np.asarray(values, dtype=object)[rng.choice(len(values), n, p=p / p.sum())]


def companies(n: int, rng: np.random.Generator) -> np.ndarray:
    """Plausible Vietnamese company names."""
    forms, words = pick(COMPANY_FORMS, n, rng), pick(COMPANY_WORDS, n, rng)
    return np.array([f"{f} {w}" for f, w in zip(forms, words, strict=True)], dtype=object)


def noun_for(m: LayerManifest) -> str:
    """The place-type word of a layer's generated names (first clause of its title)."""
    return NAME_NOUNS.get(m.id) or re.split(r",| – ", m.title.vi)[0]


def _names(
    m: LayerManifest,
    name: str,
    feat: FeatureContext,
    ctx: CityContext,
    rng: np.random.Generator,
    ward_short: np.ndarray,
) -> np.ndarray:
    n = len(feat.geoms)
    streets = streets_for(feat.street, rng)
    if (
        m.id in ("streets", "street_renamings", "pedestrian_streets", "planned_roads")
        or name == "new_name"
    ):
        return streets
    if m.id == "city_agencies":
        return pick(tuple(d["vi"] for d in DEPARTMENTS.values()), n, rng)
    if m.id == "place_names" or name == "old_name":
        return pick(PLACE_NAMES, n, rng)
    if m.id == "metro_lines":
        return np.array(
            [f"Tuyến metro số {i + 1}" for i in range(feat.start, feat.start + n)], dtype=object
        )
    if m.id == "metro_stations" or name == "station_name":
        return pick(METRO_STATIONS, n, rng)
    if "junction" in name:
        other = streets_for(np.full(n, None, dtype=object), rng)
        return np.array([f"{a} – {b}" for a, b in zip(streets, other, strict=True)], dtype=object)
    if "alley" in name:
        return np.array(
            [f"Hẻm {h} {s}" for h, s in zip(rng.integers(2, 800, n), streets, strict=True)],
            dtype=object,
        )
    if "team" in name or "quarter" in name:
        noun = "Tổ" if "team" in name else "Khu phố"
        return np.array([f"{noun} {i}" for i in rng.integers(1, 40, n)], dtype=object)
    if name in ("unit_name",) and "police" in m.id:
        return np.array(
            [f"Công an {w}" for w in ctx.ward_names[np.maximum(feat.ward, 0)]], dtype=object
        )
    if "school" in name:
        noun = "Trường"
    elif "hospital" in name:
        noun = "Bệnh viện"
    elif name in ("lessee", "investor"):
        return companies(n, rng)
    else:
        noun = noun_for(m)
    where = np.where(rng.random(n) < 0.35, ward_short, streets)
    tail = rng.integers(1, 12, n)
    return np.array(
        [f"{noun} {w}" if t > 3 else f"{noun} {w} {t}" for w, t in zip(where, tail, strict=True)],
        dtype=object,
    )


@dataclass
class _Batch:
    """One text attribute for a batch of features: what every rule may read."""

    m: LayerManifest
    attr: AttributeSpec
    feat: FeatureContext
    ctx: CityContext
    rng: np.random.Generator
    columns: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.feat.geoms)

    @property
    def name(self) -> str:
        return self.attr.name

    @property
    def ward(self) -> np.ndarray:
        return np.maximum(self.feat.ward, 0)

    @property
    def ward_names(self) -> np.ndarray:
        return self.ctx.ward_names[self.ward]

    @property
    def ward_short(self) -> np.ndarray:
        table = self.ctx.wards.table
        if "name" not in table:
            return self.ward_names
        return table["name"].astype(str).to_numpy(dtype=object)[self.ward]

    def rows(self, first: int = 0) -> range:
        return range(self.feat.start + first, self.feat.start + self.n + first)


def _document_suffix(name: str) -> str | None:
    return next((suffix for key, suffix in DOCUMENT_SUFFIX.items() if name.startswith(key)), None)


def _address(b: _Batch) -> np.ndarray:
    where = streets_for(b.feat.street, b.rng)
    houses = house_numbers(b.n, b.rng)
    return np.array(
        [f"{h} {s}, {w}" for h, s, w in zip(houses, where, b.ward_names, strict=True)],
        dtype=object,
    )


def _phones(b: _Batch) -> np.ndarray:
    first, second = b.rng.integers(0, 1000, b.n), b.rng.integers(0, 10000, b.n)
    return np.array(
        [f"028 3{x:03d} {y:04d}" for x, y in zip(first, second, strict=True)], dtype=object
    )


# np.where's "else None", the same value as a literal None (which numpy's stubs read as the
# one-argument form, returning indices).
NONE = np.array(None, dtype=object)


def _ascii_of(b: _Batch) -> np.ndarray:
    source = b.columns[b.name.removesuffix("_ascii")]
    return np.array([None if v is None else ascii_fold(str(v)) for v in source], dtype=object)


def _objects(values: Iterable[object]) -> np.ndarray:
    return np.array(list(values), dtype=object)


# When a rule matches: a regular expression searched in the attribute name, a tuple of exact
# names, or a predicate on the batch.
Match = str | tuple[str, ...] | Callable[[_Batch], bool]
Make = Callable[[_Batch], np.ndarray]

# The first matching rule makes the column. The order is part of the demo city: changing it
# changes which rules draw from the generator, and so every value drawn after.
TEXT_RULES: list[tuple[Match, Make]] = [
    (
        lambda b: re.fullmatch(r"(left_|right_)?ward_code", b.name) is not None,
        lambda b: np.where(b.feat.ward >= 0, b.ctx.ward_codes[b.ward], NONE),
    ),
    (
        ("ward", "ward_name", "ward_full_name"),
        lambda b: np.where(b.feat.ward >= 0, b.ward_names, NONE),
    ),
    (
        lambda b: b.name.endswith("_2019") or b.name.startswith("district"),
        lambda b: legacy_column(b.name, b.feat, b.ctx),
    ),
    (("province_code",), lambda b: np.full(b.n, "79", dtype=object)),
    (
        lambda b: b.name.endswith("_ascii") and b.name.removesuffix("_ascii") in b.columns,
        _ascii_of,
    ),
    *[(pattern, lambda b, vocab=vocab: pick(vocab, b.n, b.rng)) for pattern, vocab in VOCAB],
    (
        lambda b: _document_suffix(b.name) is not None and b.name != b.m.id_attribute,
        lambda b: _objects(
            f"{k}/{_document_suffix(b.name)}" for k in b.rng.integers(100, 9000, b.n)
        ),
    ),
    (
        r"digital_address_code|proposed_code",
        lambda b: unique_codes(int(b.rng.integers(0, 10**9)), b.n, 0),
    ),
    (r"(^|_)(code|id|key|no)$", lambda b: _codes(b.m, b.attr, b.feat, b.rng)),
    (
        ("highway", "road_class"),
        lambda b: pick(
            ("residential", "tertiary", "service", "secondary", "primary", "trunk"), b.n, b.rng
        ),
    ),
    (
        r"street|road$|road_name|from_point|to_point|start_point|end_point|from_area|streets",
        lambda b: streets_for(
            b.feat.street
            if re.search(r"street|road", b.name)
            else np.full(b.n, None, dtype=object),
            b.rng,
        ),
    ),
    (("house_number", "house_no", "number"), lambda b: house_numbers(b.n, b.rng)),
    (("alley",), lambda b: _objects(f"Hẻm {h}" for h in b.rng.integers(2, 800, b.n))),
    (lambda b: "address" in b.name or b.name in ("location_desc", "area_desc"), _address),
    (r"phone|hotline|tel", _phones),
    (
        lambda b: "email" in b.name,
        lambda b: _objects(f"{id_prefix(b.m.id).lower()}{i}@tphcm.gov.vn" for i in b.rows()),
    ),
    (
        r"url|website|link",
        lambda b: _objects(f"https://ioc.hochiminhcity.gov.vn/{b.m.id}/{i}" for i in b.rows(1)),
    ),
    (("school_year",), lambda b: pick(("2025-2026", "2024-2025"), b.n, b.rng)),
    (r"contact|person|officer|reporter|inspector", lambda b: person_names(b.n, b.rng)),
    (
        r"handling_unit|ward_committee|authority|issued_by",
        lambda b: _objects("UBND " + w for w in b.ward_names),
    ),
    (
        r"managing_agency|agency|department",
        lambda b: np.full(
            b.n, DEPARTMENTS.get(b.m.department, {"vi": "UBND Thành phố"})["vi"], dtype=object
        ),
    ),
    (r"operator|owner|investor|organiser|contractor|lessee", lambda b: companies(b.n, b.rng)),
    (
        r"desc|note|remark|comment|content|detail|summary",
        lambda b: _objects(
            f"{b.m.title.vi} tại đường {s}" for s in streets_for(b.feat.street, b.rng)
        ),
    ),
    (
        lambda b: (
            "name" in b.name
            or re.search(
                r"^(establishment|compartment|named_after|site)$|hospital|school|shelter", b.name
            )
            is not None
        ),
        lambda b: _names(b.m, b.name, b.feat, b.ctx, b.rng, b.ward_short),
    ),
]


def _matches(when: Match, batch: _Batch) -> bool:
    if isinstance(when, str):
        return re.search(when, batch.name) is not None
    if isinstance(when, tuple):
        return batch.name in when
    return when(batch)


def text_column(
    m: LayerManifest,
    attr: AttributeSpec,
    feat: FeatureContext,
    ctx: CityContext,
    rng: np.random.Generator,
    columns: dict[str, np.ndarray],
) -> np.ndarray:
    """Values of one text attribute (without ``values``) for a batch of features: the first
    rule of ``TEXT_RULES`` that matches its name, else "<noun> <row>"."""
    batch = _Batch(m, attr, feat, ctx, rng, columns)
    for when, make in TEXT_RULES:
        if _matches(when, batch):
            return make(batch)
    return _objects(f"{noun_for(m)} {i}" for i in batch.rows(1))


def _codes(
    m: LayerManifest, attr: AttributeSpec, feat: FeatureContext, rng: np.random.Generator
) -> np.ndarray:
    """Identifiers: the layer's own sequence, official document numbers, or references."""
    n, name = len(feat.geoms), attr.name
    if name == m.id_attribute:
        return layer_ids(m, name, feat.start, n)
    if name in ("line_no", "route_no"):
        return np.array([str(i + 1) for i in range(feat.start, feat.start + n)], dtype=object)
    if name == "tax_code":
        return np.array([f"03{k:08d}" for k in rng.integers(0, 10**8, n)], dtype=object)
    if name in ("xy", "x_m", "y_m"):
        return np.full(n, None, dtype=object)
    # A reference to another layer's feature: initials of what it names ('building_id' → 'B-…').
    prefix = id_prefix(re.sub(r"_(code|id|key|no)$", "", name))
    return np.array([f"{prefix}-{k:06d}" for k in rng.integers(1, 20_000, n)], dtype=object)


def projected_coordinate(name: str, feat: FeatureContext, srid: int) -> np.ndarray:
    """x_m / y_m: the feature's coordinates in the layer's projected CRS (VN-2000 metres)."""
    import shapely

    points = reproject(shapely.points(feat.anchor_x, feat.anchor_y), 4326, srid)
    return np.round(shapely.get_x(points) if name.startswith("x") else shapely.get_y(points), 3)


def legacy_column(name: str, feat: FeatureContext, ctx: CityContext) -> np.ndarray:
    """Codes and names of the pre-2025 ward or district containing each feature."""
    stem = (
        "districts_2024"
        if name.startswith("district") and not name.endswith("2019")
        else "wards_2019"
    )
    if name.startswith("district") and name.endswith("2019"):
        stem = "districts_2019"
    units = ctx.admin_units(stem)
    found = units.locate(feat.anchor_x, feat.anchor_y)
    base = name.removesuffix("_2019").removesuffix("_2024")
    table = units.table
    column = next(
        (
            c
            for c in (
                base,
                base.replace("ward_", "ward_name"),
                "ward_code" if "code" in base else "full_name",
                "name",
            )
            if c in table.columns
        ),
        None,
    )
    if column is None:
        return np.full(len(found), None, dtype=object)
    values = table[column].astype(str).to_numpy(dtype=object)
    return np.where(found >= 0, values[np.maximum(found, 0)], NONE)
