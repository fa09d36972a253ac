"""``ioc layers``: list the catalog, sync it from the manifests, register an existing table,
create a layer from a file."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
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


@app.command("create")
@friendly
def layers_create(
    file: Annotated[
        Path, typer.Argument(help="GeoJSON, zipped Shapefile, GeoPackage, CSV or KML.")
    ],
    title_vi: Annotated[str, typer.Option(help="Title in Vietnamese.")],
    title_en: Annotated[str, typer.Option(help="Title in English (the id comes from it).")],
    domain: Annotated[str, typer.Option(help="Catalog domain, e.g. transport.")],
    department: Annotated[str, typer.Option(help="Owning department code.")],
    access: Annotated[str, typer.Option(help="public, internal or restricted.")] = "internal",
    id_attribute: Annotated[str | None, typer.Option(help="Attribute that identifies.")] = None,
    time_attribute: Annotated[str | None, typer.Option(help="Date or time attribute.")] = None,
    layer_id: Annotated[
        str | None, typer.Option("--id", help="Layer id (default: from title).")
    ] = None,
    crs: Annotated[str | None, typer.Option(help="CRS when the file has none.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be created; create nothing.")
    ] = False,
) -> None:
    """Create a layer from a file: its schema, CRS, extent and defaults are read from it."""
    from layers.inference import NewLayerFields
    from layers.publish_preview import create_from_file
    from layers.publish_staging import PublishOptions

    if not file.is_file():
        raise IocError(f"There is no file {file}.")
    fields = NewLayerFields(
        title_vi=title_vi,
        title_en=title_en,
        domain=domain,
        access=access,
        id_attribute=id_attribute,
        time_attribute=time_attribute,
        layer_id=layer_id,
        department=department,
    )
    doc = create_from_file(
        get_settings(),
        file,
        f"cli:{getpass.getuser()}",
        fields,
        PublishOptions(crs=crs),
        filename=file.name,
        dry_run=dry_run,
    )
    inference = doc["inference"]
    out.print(
        f"{file.name}: {inference['count']:,} {inference['geometry_type']} features in "
        f"{inference['crs_name']} (EPSG:{inference['source_srid']}), attributes "
        + ", ".join(f"{a['name']} ({a['type']})" for a in inference["attributes"]),
        highlight=False,
    )
    if dry_run:
        out.print(
            f"Dry run: {doc['accepted']:,} accepted, {doc['rejected']:,} rejected; "
            f"nothing was created.",
            highlight=False,
        )
        return
    out.print(
        f"Created layer '{doc['layer']}' (version {doc['version']}, "
        f"{doc['feature_count']:,} features).",
        highlight=False,
    )
