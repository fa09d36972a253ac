"""``ioc publish FILE --layer ID`` and ``ioc import DIR``: publishing from the command line.

The command line acts as ``cli:<user>`` with admin rights: whoever can run it can reach the
database directly anyway. Every publish is still validated, versioned and audited.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ioc.catalog.access import ADMIN
from ioc.catalog.layers import load_catalog_sync
from ioc.cli.console import err, friendly, out, progress_bar
from ioc.config import get_settings
from ioc.db.connection import connection
from ioc.errors import IocError
from layers import publishing
from layers.ingest import FORMATS

SUFFIXES = (".geojson", ".json", ".zip", ".gpkg", ".csv", ".kml")


def _principal() -> str:
    return f"cli:{getpass.getuser()}"


def _layer(layer_id: str):
    with connection(get_settings().database) as conn:
        return load_catalog_sync(conn).get(layer_id, ADMIN)


@friendly
def publish(
    file: Annotated[
        Path, typer.Argument(help="GeoJSON, zipped Shapefile, GeoPackage, CSV or KML.")
    ],
    layer: Annotated[str, typer.Option(help="Layer id to publish to.")],
    append: Annotated[
        bool, typer.Option("--append", help="Add features instead of replacing.")
    ] = False,
    crs: Annotated[
        str | None, typer.Option(help="CRS when the file has none, e.g. EPSG:9210.")
    ] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Repair invalid geometries.")] = False,
    partial: Annotated[
        bool, typer.Option("--partial", help="Publish the valid features only.")
    ] = False,
    ignore_unknown: Annotated[
        bool, typer.Option("--ignore-unknown", help="Ignore unknown fields.")
    ] = False,
) -> None:
    """Validate FILE and make it the layer's data (atomically, versioned, audited)."""
    if not file.is_file():
        raise IocError(f"There is no file {file}.")
    target = _layer(layer)
    with progress_bar() as bar:
        task = bar.add_task(f"publishing {file.name} → {layer}", total=None)
        report = publishing.publish_upload(
            get_settings(),
            target,
            file,
            _principal(),
            mode="append" if append else "replace",
            filename=file.name,
            crs=crs,
            invalid="repair" if repair else "reject",
            partial=partial,
            ignore_unknown=ignore_unknown,
            progress=lambda n: bar.update(task, completed=n),
        )
    out.print(
        f"Layer {layer} is now version {report.version}: {report.accepted:,} accepted, "
        f"{report.repaired:,} repaired, {report.rejected:,} rejected; "
        f"{report.feature_count:,} features.",
        highlight=False,
    )


@friendly
def import_dir(
    folder: Annotated[
        Path, typer.Argument(help="A department's export: files named <layer_id>.<ext>.")
    ],
    crs: Annotated[str | None, typer.Option(help="CRS for files that have none.")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Repair invalid geometries.")] = False,
) -> None:
    """Publish every file of FOLDER to the layer named like the file; a summary at the end."""
    files = (
        sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
        if folder.is_dir()
        else []
    )
    if not files:
        raise IocError(f"{folder} holds no {', '.join(FORMATS)} files named after layers.")
    settings = get_settings()
    table = Table("file", "layer", "result", "accepted", "rejected", "version")
    failures = 0
    with progress_bar() as bar:
        task = bar.add_task("importing", total=len(files))
        for path in files:
            layer_id = path.name.split(".")[0]
            try:
                report = publishing.publish_upload(
                    settings,
                    _layer(layer_id),
                    path,
                    _principal(),
                    filename=path.name,
                    crs=crs,
                    invalid="repair" if repair else "reject",
                )
                table.add_row(
                    path.name,
                    layer_id,
                    "[green]published[/green]",
                    f"{report.accepted:,}",
                    f"{report.rejected:,}",
                    str(report.version),
                )
            except IocError as exc:
                failures += 1
                table.add_row(path.name, layer_id, f"[red]{exc.message}[/red]", "", "", "")
            bar.advance(task)
    out.print(table)
    if failures:
        err.print(f"{failures} of {len(files)} files were not published; the others were.")
        raise typer.Exit(1)
