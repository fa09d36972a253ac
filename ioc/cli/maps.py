"""``ioc maps``: list, check and render the map views to files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, cast

import typer
from rich.table import Table

from ioc.catalog.access import ADMIN, ANONYMOUS, ROLES, Principal
from ioc.cli.console import err, friendly, out
from ioc.config import get_settings
from ioc.errors import IocError
from ioc.maps import views as maps
from ioc.maps.render import render_page

app = typer.Typer(
    help="Map views (Folium pages): list, check, render to a file.", no_args_is_help=True
)


def _views() -> dict[str, maps.MapView]:
    return maps.load_views(get_settings().maps.views_dir)


def _principal(role: str, department: str | None) -> Principal:
    """The caller the file is rendered for (by default, the view's audience)."""
    if role not in ROLES:
        raise IocError(f"Unknown role '{role}': use one of {', '.join(ROLES)}.")
    if role == "anonymous":
        return ANONYMOUS
    return Principal(role=role, department=department if role == "publisher" else None)  # type: ignore[arg-type]


@app.command("list")
@friendly
def list_views() -> None:
    """The view files and their layers."""
    table = Table("id", "audience", "layout", "layers", "title")
    for view in _views().values():
        table.add_row(
            view.id,
            view.audience,
            view.layout,
            ", ".join(la.layer for la in view.layers),
            view.title.vi,
        )
    out.print(table)


@app.command("check")
@friendly
def check() -> None:
    """Validate every view file (exit 1 on the first invalid one)."""
    views = _views()
    out.print(f"{len(views)} map views are valid: {', '.join(views)}")


@app.command("render")
@friendly
def render(
    view_id: Annotated[str, typer.Argument(metavar="VIEW", help="View id, or preview:LAYER.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write.")],
    base_url: Annotated[
        str,
        typer.Option(
            help="Server the page loads assets and data from, "
            "e.g. https://ioc.example.vn (default: same origin)."
        ),
    ] = "",
    lang: Annotated[str | None, typer.Option(help="vi or en (default: the view's).")] = None,
    embed: Annotated[bool, typer.Option(help="Chrome-less page for an iframe.")] = False,
    role: Annotated[
        str | None,
        typer.Option(help="Render the layers this role may read (default: the view's audience)."),
    ] = None,
    department: Annotated[str | None, typer.Option(help="Department of a publisher.")] = None,
) -> None:
    """Write one view to an HTML file (the layers come from the server at BASE_URL)."""
    from ioc.catalog.layers import load_catalog_sync
    from ioc.db.connection import connection

    if base_url and not base_url.startswith(("http://", "https://")):
        raise IocError("--base-url must start with http:// or https://.")
    if lang not in (None, "vi", "en"):
        raise IocError(f"Unknown language '{lang}': use vi or en.")
    with connection(get_settings().database) as conn:
        catalog = load_catalog_sync(conn)
    if view_id.startswith("preview:"):
        layer_id = view_id.split(":", 1)[1]
        layer = catalog.get(layer_id, ADMIN)
        # By default the file is for whoever may read the layer: citizens, staff or its owner.
        default = {"public": "anonymous", "internal": "operator"}.get(layer.access, "publisher")
        principal = _principal(role or default, department or layer.department)
        layer = catalog.get(layer_id, principal)
        plan = maps.plan_view(maps.preview_view(layer), catalog, principal)
        page_path = f"/maps/preview/{layer.id}"
    else:
        views = _views()
        if view_id not in views:
            raise IocError(f"There is no map view '{view_id}': see 'ioc maps list'.")
        view = views[view_id]
        principal = _principal(
            role or ("anonymous" if view.audience == "public" else "operator"), department
        )
        plan = maps.plan_view(view, catalog, principal)
        page_path = f"/maps/{view.id}"
    # The file is served by something else: its own <meta> CSP keeps script to its nonce.
    html = render_page(
        plan,
        lang=cast(Literal["vi", "en"] | None, lang),  # checked above
        embed=embed,
        base_url=base_url,  # type: ignore[arg-type]
        page_path=page_path,
        meta_csp=True,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(html, encoding="utf-8")
    dropped = (
        f"; left out (not readable as {principal.label}): {', '.join(plan.dropped)}"
        if plan.dropped
        else ""
    )
    err.print(f"wrote {output} ({len(plan.layers)} layers{dropped})", highlight=False)
