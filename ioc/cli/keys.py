"""``ioc keys``: create, list and revoke API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ioc.catalog import keys as keys_mod
from ioc.cli.console import err, friendly, out
from ioc.config import get_settings
from ioc.db.connection import connection
from ioc.errors import IocError

app = typer.Typer(help="API keys.", no_args_is_help=True)


@app.command("create")
@friendly
def keys_create(
    role: Annotated[str, typer.Option(help="operator, analyst, publisher or admin.")],
    department: Annotated[str | None, typer.Option(help="Department of a publisher.")] = None,
    label: Annotated[str, typer.Option(help="Who or what the key is for.")] = "",
) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    with connection(get_settings().database) as conn:
        key = keys_mod.create_key(conn, role, department, label)
    err.print(
        f"Created a {role} key{' for ' + department if department else ''}; store it now,"
        " it is not shown again:"
    )
    typer.echo(key)


@app.command("list")
@friendly
def keys_list() -> None:
    """List keys (never the secrets)."""
    with connection(get_settings().database) as conn:
        rows = keys_mod.list_keys(conn)
    table = Table("id", "prefix", "role", "department", "label", "created", "revoked")
    for k in rows:
        table.add_row(
            str(k.id),
            k.prefix,
            k.role,
            k.department or "",
            k.label,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )
    out.print(table)


@app.command("revoke")
@friendly
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="Key id from 'ioc keys list'.")],
) -> None:
    """Revoke a key."""
    with connection(get_settings().database) as conn:
        if not keys_mod.revoke_key(conn, key_id):
            raise IocError(f"There is no active key with id {key_id}.")
    out.print(f"Key {key_id} revoked.")
