"""Quoting of SQL identifiers.

Identifiers (schemas, tables, columns) come from the catalog only; values are always bound.
This is the one place that turns a name into SQL text.
"""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """Quote one identifier the way PostgreSQL's quote_ident does (always quoted)."""
    if not name or "\x00" in name or len(name.encode()) > 63:
        raise ValueError(f"invalid SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    """Quote a schema-qualified table name."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"
