"""CQL2 filters (OGC API – Features Part 3): parse with pygeofilter here, translate to SQL in
``ioc.features.cql2_sql``.

pygeofilter turns CQL2 text or JSON into its AST; ``cql2_sql`` walks that AST and writes SQL in
which every property is a catalog attribute quoted by ``quote_ident`` and every literal is a
bound parameter (``$n`` with a cast from the attribute's type). Anything it does not know —
an unknown property, an operator or function it does not translate, a malformed literal —
is a 400 naming the ``filter`` parameter, never a 500 and never SQL text from the user.

pygeofilter 0.4.0 reads an older draft of CQL2 text (infix ``a T_AFTER b``, no ``S_DWITHIN``,
two-letter minimum property names, no ``''`` escapes), and an older CQL2 JSON (``between`` with
a nested pair). The grammar is extended and the JSON normalised so that the published
standard forms (OGC 21-065r2) parse too; the AST and transformer stay pygeofilter's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from pygeofilter import ast, values

from ioc.errors import InvalidParameter

FILTER_LANGS = ("cql2-text", "cql2-json")
MAX_FILTER_LENGTH = 20_000
GEOMETRY_NAME = "geometry"  # the queryable name of every layer's geometry

# Requirements classes of CQL2 this translator passes (listed in /conformance).
CONFORMANCE = tuple(
    f"http://www.opengis.net/spec/cql2/1.0/conf/{c}"
    for c in (
        "cql2-text",
        "cql2-json",
        "basic-cql2",
        "advanced-comparison-operators",
        "case-insensitive-comparison",
        "accent-insensitive-comparison",
        "basic-spatial-functions",
        "basic-spatial-functions-plus",
        "spatial-functions",
        "property-property",
    )
)


@dataclass
class TimeIntersects(ast.TemporalPredicate):
    """T_INTERSECTS: pygeofilter 0.4.0 maps it to TimeOverlaps, a different relation."""

    op: ClassVar[Any] = None


# --- parsing ---------------------------------------------------------------------------------


def _grammar() -> tuple[str, str]:
    import pygeofilter.parsers.cql2_text as text_parser

    path = Path(text_parser.__file__).parent / "grammar.lark"
    grammar = path.read_text()
    replacements = {
        # single-letter property names are legal CQL2 identifiers
        "attribute: /[a-zA-Z][a-zA-Z_:0-9.]+/": "attribute: /[a-zA-Z_][a-zA-Z_:0-9.]*/",
        # '' is an escaped quote inside a CQL2 string
        'SINGLE_QUOTED: "\'" /.*?/ "\'"': "SINGLE_QUOTED: /'(?:[^']|'')*'/",
        # intervals with open ends ('..') and dates
        '?interval: "INTERVAL" "("  "\'" DATETIME "\'" "," "\'" DATETIME "\'" ")"': 'interval: "INTERVAL"i "(" SINGLE_QUOTED "," SINGLE_QUOTED ")"',
        # the standard's function form T_AFTER(a, b) beside the draft's infix form
        "?temporal_predicate: expression _binary_temporal_predicate_func expression "
        "-> binary_temporal_predicate": "?temporal_predicate: expression _binary_temporal_predicate_func expression "
        "-> binary_temporal_predicate\n"
        '    | _binary_temporal_predicate_func "(" expression "," expression ")" '
        "-> temporal_function_predicate",
        # NOT applies to any parenthesised condition, not only to a single predicate
        '| "NOT"i "(" predicate ")"': '| "NOT"i "(" condition ")"',
        # T_DISJOINT is in CQL2 1.0 but not in pygeofilter's list
        '| "T_INTERSECTS"i': '| "T_INTERSECTS"i\n    | "T_DISJOINT"i',
        # S_DWITHIN(geometry, literal, distance[, units])
        "?spatial_predicate: _binary_spatial_predicate_func": '?spatial_predicate: "S_DWITHIN"i "(" expression "," expression "," '
        'full_number ["," attribute] ")" -> dwithin_predicate\n'
        "    | _binary_spatial_predicate_func",
    }
    for old, new in replacements.items():
        if old not in grammar:
            raise RuntimeError(f"pygeofilter grammar changed; cannot patch: {old!r}")
        grammar = grammar.replace(old, new)
    return grammar, str(path)


@lru_cache(maxsize=1)
def _text_parser():
    from lark import Lark, v_args
    from pygeofilter.parsers.cql2_text.parser import CQLTransformer
    from pygeofilter.util import parse_date, parse_datetime

    @v_args(meta=False, inline=True)
    class Transformer(CQLTransformer):
        def wkt__geometry_with_srid(self, srid, geometry):  # pygeofilter prints here
            geometry["crs"] = {
                "type": "name",
                "properties": {"name": f"urn:ogc:def:crs:EPSG::{srid}"},
            }
            return geometry

        def wkt__multipoint_2(self, *coordinates):  # pygeofilter prints here
            return {"type": "MultiPoint", "coordinates": coordinates}

        def SINGLE_QUOTED(self, token):
            return token[1:-1].replace("''", "'")

        def interval(self, start, end):
            def bound(text: str):
                if text == "..":
                    return None
                return parse_datetime(text) if "T" in text or " " in text else parse_date(text)

            return values.Interval(bound(start), bound(end))

        def binary_temporal_predicate(self, lhs, op, rhs):
            if str(op).lower() == "t_intersects":
                return TimeIntersects(lhs, rhs)
            if str(op).lower() == "t_disjoint":
                return ast.TimeDisjoint(lhs, rhs)
            return super().binary_temporal_predicate(lhs, op, rhs)

        def temporal_function_predicate(self, op, lhs, rhs):
            return self.binary_temporal_predicate(lhs, op, rhs)

        def dwithin_predicate(self, lhs, rhs, distance, units=None):
            unit = units.name if isinstance(units, ast.Attribute) else "meters"
            return ast.DistanceWithin(lhs, rhs, distance, unit)

    grammar, path = _grammar()
    return Lark(
        grammar,
        parser="lalr",
        transformer=Transformer(),
        maybe_placeholders=False,
        source_path=path,
        import_paths=[str(Path(path).parent.parent)],
    )


def _normalise_json(node: Any) -> Any:
    """Rewrite standard CQL2 JSON into the dialect pygeofilter 0.4.0 reads."""
    if isinstance(node, list):
        return [_normalise_json(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "bbox" in node and isinstance(node["bbox"], list):  # its Envelope misreads the order
        b = node["bbox"]
        if len(b) == 6:
            b = [b[0], b[1], b[3], b[4]]
        if len(b) != 4:
            raise ValueError("a bbox literal needs 4 or 6 numbers")
        return {
            "type": "Polygon",
            "coordinates": [[[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]], [b[0], b[1]]]],
        }
    op = node.get("op")
    args = node.get("args")
    if isinstance(op, str) and isinstance(args, list):
        name = op.lower()
        args = _normalise_json(args)
        if name == "between" and len(args) == 3:
            args = [args[0], [args[1], args[2]]]
        if name in ("s_dwithin", "accenti", "t_intersects", "t_disjoint"):
            return {"function": {"name": name, "arguments": args}}
        if name == "like" and len(args) == 2 and isinstance(args[1], dict):
            from pygeofilter.parsers.cql2_json.parser import walk_cql_json

            args = [args[0], walk_cql_json(args[1])]  # pygeofilter leaves patterns unparsed
        return {**node, "op": "isNull" if name == "isnull" else name, "args": args}
    return {key: _normalise_json(value) for key, value in node.items()}


def _from_json_functions(node: Any) -> Any:
    """Turn the function markers of :func:`_normalise_json` into AST nodes."""
    if isinstance(node, ast.Function) and node.name == "s_dwithin":
        args = node.arguments
        if len(args) not in (3, 4):
            raise ValueError("S_DWITHIN takes a geometry, a geometry, a distance and units")
        units = args[3] if len(args) == 4 else "meters"
        return ast.DistanceWithin(args[0], args[1], args[2], units)
    if isinstance(node, ast.Function) and node.name in ("t_intersects", "t_disjoint"):
        if len(node.arguments) != 2:
            raise ValueError(f"{node.name.upper()} takes two arguments")
        kind = TimeIntersects if node.name == "t_intersects" else ast.TimeDisjoint
        return kind(*node.arguments)
    return node


def _walk(node: Any, visit) -> Any:
    """Apply ``visit`` bottom-up to the AST's sub-nodes (dataclass fields)."""
    if isinstance(node, list):
        return [_walk(n, visit) for n in node]
    if isinstance(node, ast.Node) and hasattr(node, "__dataclass_fields__"):
        for name in node.__dataclass_fields__:
            setattr(node, name, _walk(getattr(node, name), visit))
    return visit(node)


def parse_filter(text: str, lang: str | None = None, *, parameter: str = "filter") -> Any:
    """Parse a CQL2 filter into pygeofilter's AST; 400 naming the parameter when malformed."""
    lang = (lang or "cql2-text").lower()
    if lang not in FILTER_LANGS:
        raise InvalidParameter(
            f"Unknown filter-lang '{lang}': use cql2-text or cql2-json.", parameter="filter-lang"
        )
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidParameter(
            f"The filter is longer than {MAX_FILTER_LENGTH} characters.", parameter=parameter
        )
    try:
        if lang == "cql2-json":
            from pygeofilter.parsers.cql2_json.parser import walk_cql_json

            tree = _walk(walk_cql_json(_normalise_json(json.loads(text))), _from_json_functions)
        else:
            tree = _text_parser().parse(text)
    except Exception as exc:  # lark, json and pygeofilter raise many kinds on bad input
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InvalidParameter(f"Malformed {lang} filter: {detail}", parameter=parameter) from None
    return tree
