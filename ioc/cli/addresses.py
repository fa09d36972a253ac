"""``ioc addresses``: import the national platform's export, rebuild the index, link, look up."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ioc.addresses.registry import AddressSettings
from ioc.cli.console import err, friendly, out
from ioc.config import get_settings
from ioc.errors import IocError

app = typer.Typer(
    help="Địa chỉ số — digital addresses: import, index, links, look-ups.", no_args_is_help=True
)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=not sys.stderr.isatty(),
    )


def _settings() -> AddressSettings:
    return get_settings().addresses


def _print_links(links: dict[str, int]) -> None:
    if links:
        linked = sum(links.values())
        out.print(f"Linked {linked:,} features of {len(links)} point layers to addresses.")


@app.command("import")
@friendly
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV or GeoJSON export (.gz accepted).")],
    source: Annotated[
        str | None, typer.Option(help="Source name stored with each address.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only records valid from this date (YYYY-MM-DD).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and report; write nothing.")
    ] = False,
    link: Annotated[bool, typer.Option(help="Relink point layers afterwards.")] = True,
    report: Annotated[
        Path | None, typer.Option(help="Write every rejected row to this CSV.")
    ] = None,
) -> None:
    """Import an export of the national digital-address platform; rejected rows are reported."""
    from ioc.addresses.imports import ExportFile, import_addresses, parse_date
    from ioc.db.connection import connection

    start = parse_date(since) if since else None
    if isinstance(start, str):
        raise IocError(f"--since '{since}' is not a date (YYYY-MM-DD).")
    service = ExportFile(file, source)
    with connection(get_settings().database) as conn, _progress() as progress:
        task = progress.add_task(f"reading {file.name}", total=None)
        result = import_addresses(
            conn,
            service,
            settings=_settings(),
            since=start if isinstance(start, date) else None,
            dry_run=dry_run,
            link=link,
            progress=lambda n: progress.update(task, description=f"read {n:,} rows"),
        )
    verb = "would import" if dry_run else "imported"
    out.print(
        f"{result.read:,} rows read, {verb} {result.imported:,}, rejected "
        f"{len(result.rejected):,} (source {result.source}).",
        highlight=False,
    )
    if result.rejected:
        table = Table("row", "code", "reason", title="Dòng bị từ chối / rejected rows")
        for r in result.rejected[:20]:
            table.add_row(str(r.row), r.code or "", r.reason)
        out.print(table)
        if len(result.rejected) > 20 and report is None:
            out.print(f"… and {len(result.rejected) - 20:,} more: use --report FILE for all.")
    if report is not None:
        result.write_rejected(report)
        out.print(f"Rejected rows written to {report}.", highlight=False)
    if result.index is not None:
        out.print(f"Registry version {result.index.version}: {result.index.count:,} addresses.")
        _print_links(result.index.links)


@app.command("index")
@friendly
def index_command(
    link: Annotated[bool, typer.Option(help="Relink point layers afterwards.")] = True,
) -> None:
    """Rebuild the registry from the address layer (demo city), the vocabulary and the links."""
    from ioc.addresses.index import build_address_index
    from ioc.db.connection import connection

    with connection(get_settings().database) as conn, _progress() as progress:
        task = progress.add_task("loading the address layer", total=None)
        result = build_address_index(
            conn,
            settings=_settings(),
            link=link,
            progress=lambda layer, n: progress.update(task, description=f"linked {layer}"),
        )
    out.print(
        f"Registry version {result.version}: {result.count:,} addresses "
        f"({result.synced.get('loaded', 0):,} from the layer, "
        f"{result.synced.get('skipped', 0):,} skipped); vocabulary "
        f"{', '.join(f'{k} {v:,}' for k, v in result.names.items())}."
    )
    _print_links(result.links)


@app.command("link")
@friendly
def link_command(
    layers: Annotated[
        list[str] | None, typer.Argument(help="Layer ids (default: every point layer).")
    ] = None,
) -> None:
    """Link features of point layers to their nearest address (within the link distance)."""
    from ioc.addresses.index import link_layers, point_layers
    from ioc.catalog.layers import load_catalog_sync
    from ioc.db.connection import connection

    settings = _settings()
    with connection(get_settings().database) as conn:
        catalog = load_catalog_sync(conn)
        chosen = point_layers(catalog, settings)
        if layers:
            known = {la.id: la for la in chosen}
            missing = [i for i in layers if i not in known]
            if missing:
                raise IocError(f"Not point layers of the catalog: {', '.join(missing)}.")
            chosen = [known[i] for i in layers]
        with _progress() as progress:
            task = progress.add_task("linking", total=None)
            links = link_layers(
                conn,
                chosen,
                settings,
                lambda layer, n: progress.update(task, description=f"linked {layer}"),
            )
    table = Table("layer", "linked features")
    for layer_id, n in links.items():
        table.add_row(layer_id, f"{n:,}")
    out.print(table)


async def _with_conn(work: Callable[[Any], Any]) -> Any:
    import asyncpg

    conn = await asyncpg.connect(get_settings().database.dsn())
    try:
        return await work(conn)
    finally:
        await conn.close()


@app.command("show")
@friendly
def show_command(code: Annotated[str, typer.Argument(help="Digital address code.")]) -> None:
    """Print one address as GeoJSON."""
    from ioc.addresses.lookup import get_address
    from ioc.addresses.registry import address_feature, validate_code

    code = validate_code(code, _settings().code_pattern)

    async def work(conn: Any) -> Any:
        return address_feature(await get_address(conn, code))

    typer.echo(json.dumps(asyncio.run(_with_conn(work)), ensure_ascii=False, indent=1))


@app.command("search")
@friendly
def search_command(
    text: Annotated[str, typer.Argument(help="Free text, with or without diacritics.")],
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
) -> None:
    """Search addresses as the API does."""
    from ioc.addresses.geocode import search_addresses
    from ioc.addresses.registry import address_properties

    async def work(conn: Any) -> Any:
        return await search_addresses(conn, text, limit=limit)

    table = Table("code", "score", "level", "address")
    for hit in asyncio.run(_with_conn(work)):
        table.add_row(
            hit.row["code"], f"{hit.score:.2f}", hit.level, address_properties(hit.row)["address"]
        )
    out.print(table)


@app.command("status")
@friendly
def status_command() -> None:
    """Registry size, version and links."""
    from ioc.db.connection import connection

    with connection(get_settings().database) as conn, conn.cursor() as cur:
        cur.execute("SELECT value FROM ioc.meta WHERE key = 'addresses'")
        meta = cur.fetchone()
        cur.execute("SELECT source, count(*) FROM ioc.addresses GROUP BY 1 ORDER BY 1")
        sources = cur.fetchall()
        cur.execute("SELECT count(*), count(DISTINCT layer_id) FROM ioc.address_links")
        links = cur.fetchone()
    if meta is None or links is None:
        out.print("The address registry has not been built: run 'ioc addresses index' or import.")
        return
    out.print(
        f"Registry version {meta[0].get('version')}: {meta[0].get('count', 0):,} addresses; "
        f"{links[0]:,} features of {links[1]} layers linked."
    )
    for source, n in sources:
        out.print(f"  {source}: {n:,}", highlight=False)
