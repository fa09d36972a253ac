"""``ioc layers``: list the catalog, sync it from the manifests, register an existing table."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ioc.catalog.access import ADMIN, ROLES, Principal
from ioc.catalog.layers import load_catalog_sync
from ioc.cli.console import friendly, out
from ioc.config import get_settings
from ioc.db.connection import connection
from ioc.errors import IocError

app = typer.Typer(help="The layer catalog.", no_args_is_help=True)


@app.command("list")
@friendly
def layers_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    role: Annotated[
        str, typer.Option(help=f"See the catalog as this role: {', '.join(ROLES)}.")
    ] = "admin",
    department: Annotated[str | None, typer.Option(help="Department of a publisher.")] = None,
) -> None:
    """List the layers a role may see (default: admin, i.e. all)."""
    if role not in ROLES:
        raise IocError(f"Unknown role '{role}': use one of {', '.join(ROLES)}.")
    principal = ADMIN if role == "admin" else Principal(role=role, department=department)  # type: ignore[arg-type]
    with connection(get_settings().database) as conn:
        layers = load_catalog_sync(conn).visible(principal)
    if as_json:
        doc = [
            {
                "id": la.id,
                "title": {"vi": la.title_vi, "en": la.title_en},
                "domain": la.domain,
                "department": la.department,
                "access": la.access,
                "geometry_type": la.geometry_type,
                "srid": la.srid,
                "feature_count": la.feature_count,
                "version": la.version,
                "extent": la.extent,
                "origin": la.origin,
            }
            for la in layers
        ]
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=1))
        return
    table = Table("id", "domain", "department", "access", "features", "title")
    for la in layers:
        table.add_row(
            la.id, la.domain, la.department, la.access, f"{la.feature_count:,}", la.title_vi
        )
    out.print(table)
    out.print(f"{len(layers)} layers in {len({la.domain for la in layers})} domains")


@app.command("sync")
@friendly
def layers_sync() -> None:
    """Sync the manifests in layers/catalog into the registry (creates missing tables)."""
    from layers import registry
    from layers.manifest import load_catalog

    manifests = load_catalog()
    with connection(get_settings().database) as conn:
        count = registry.sync_manifests(conn, manifests)
    out.print(f"{count} layer manifests synced.")


@app.command("add-table")
@friendly
def layers_add_table(
    table: Annotated[str, typer.Argument(help="SCHEMA.TABLE of an existing PostGIS table.")],
    layer_id: Annotated[str, typer.Option("--id", help="Layer id to serve it as.")],
    access: Annotated[str, typer.Option(help="public, internal or restricted.")] = "internal",
    department: Annotated[str, typer.Option(help="Owning department code.")] = "science_tech",
    domain: Annotated[str, typer.Option(help="Catalog domain.")] = "registered",
    title: Annotated[str | None, typer.Option(help="Title shown in the catalog.")] = None,
) -> None:
    """Register an existing table as a layer."""
    from layers import registry

    schema, _, name = table.rpartition(".")
    if not schema or not name:
        raise IocError("Give the table as SCHEMA.TABLE, e.g. public.flood_sensors.")
    with connection(get_settings().database) as conn:
        registry.add_table(
            conn,
            schema,
            name,
            layer_id=layer_id,
            access=access,
            department=department,
            domain=domain,
            title=title,
        )
    out.print(f"Registered {table} as layer '{layer_id}' ({access}).", highlight=False)
