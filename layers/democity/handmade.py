"""Shared pieces of the hand-tuned generators: the result type and attribute matching."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from layers.democity.context import CityContext
from layers.democity.synth import RawBatch
from layers.manifest import AttributeSpec, LayerManifest


@dataclass
class Special:
    """A hand-tuned layer: batches for a generator, total rows, synthetic flag, note."""

    batches: Callable[[np.random.Generator], Iterator[RawBatch]]
    total: int
    synthetic: bool
    note: str


def attr(
    m: LayerManifest, pattern: str, kind: tuple[str, ...] | None = None
) -> AttributeSpec | None:
    """The first attribute whose name matches a regular expression (and type, if given)."""
    return next(
        (
            a
            for a in m.attributes
            if re.search(pattern, a.name) and (kind is None or a.type in kind)
        ),
        None,
    )


def put(known: dict[str, object], spec: AttributeSpec | None, values: object) -> None:
    """Set an attribute's values unless already set; numbers are kept inside its range."""
    if spec is not None and spec.name not in known:
        if spec.range is not None and spec.type in ("integer", "number"):
            values = np.clip(np.asarray(values, dtype=float), *spec.range)
        known[spec.name] = values


def wards_note(ctx: CityContext) -> str:
    """'real' or 'synthetic', for notes."""
    return "synthetic" if ctx.wards.synthetic else "real"
