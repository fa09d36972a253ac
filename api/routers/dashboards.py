"""Operations dashboards (issue 21): the list, a dashboard's page, its panels' data, the unit
shapes its map colours, and each panel as CSV."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import CatalogDep, PoolDep, get_principal
from api.html import negotiate, render
from api.routers.maps import MapsSettingsDep, _safe_next, page_headers
from api.routers.query import QuerySettingsDep
from api.urls import BaseUrlDep, app_path, base_path, page_base
from ioc import media
from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog
from ioc.dashboards import model
from ioc.dashboards.export import panel_csv, unit_shapes
from ioc.dashboards.filters import CITY_TZ, BoardFilter, parse_filter
from ioc.dashboards.page import render_dashboard
from ioc.dashboards.panels import dashboard_data
from ioc.dashboards.points import MAX_POINTS, POINTS, newest_points
from ioc.db.connection import Pool
from ioc.errors import NotAuthenticated
from ioc.maps.render import new_nonce
from ioc.query.model import QuerySettings

router = APIRouter(prefix="/dashboards", tags=["dashboards"])
PrincipalDep = Annotated[Principal, Depends(get_principal)]
PAGE_ONLY = ("lang", "layout")
FILTER_DOC = (
    "Filters and time range: category, status, channel, handling_unit, district (2019 code), "
    "ward (2025 code), ward2019, from, to (ISO 8601, city time without offset), bucket "
    "(day|hour), units (district|ward|ward2019: what the map shows)."
)


@lru_cache(maxsize=1)
def boards() -> dict[str, model.Dashboard]:
    """The dashboard files, read once (``api.app`` reads them at start-up: a broken file stops
    the start)."""
    return model.load_dashboards()


BoardsDep = Annotated[dict[str, model.Dashboard], Depends(boards)]


@dataclass(frozen=True)
class BoardCall:
    """A dashboard the caller may open (404 otherwise), with what its data requests need."""

    board: model.Dashboard
    principal: Principal
    catalog: Catalog
    pool: Pool
    settings: QuerySettings


def board_call(
    board_id: str,
    all_boards: BoardsDep,
    principal: PrincipalDep,
    catalog: CatalogDep,
    pool: PoolDep,
    settings: QuerySettingsDep,
) -> BoardCall:
    board = model.get_dashboard(all_boards, board_id, principal)
    return BoardCall(board, principal, catalog, pool, settings)


BoardCallDep = Annotated[BoardCall, Depends(board_call)]


def _state(
    request: Request, board: model.Dashboard, own: tuple[str, ...] = PAGE_ONLY
) -> BoardFilter:
    """The dashboard's state from the URL (the page's or endpoint's ``own`` parameters left
    aside)."""
    params = {k: v for k, v in request.query_params.items() if k not in own}
    return parse_filter(board, params, datetime.now(CITY_TZ))


async def _panels(request: Request, call: BoardCallDep) -> dict:
    state = _state(request, call.board)
    return await dashboard_data(
        call.pool, call.catalog, call.principal, call.settings, call.board, state
    )


def _doc(board: model.Dashboard, base: str) -> dict:
    return {
        "id": board.id,
        "title": board.title.model_dump(),
        "description": board.description.model_dump(),
        "audience": board.audience,
        "layer": board.layer,
        "href": f"{base}/dashboards/{board.id}",
        "data": f"{base}/dashboards/{board.id}/data",
    }


@router.get("", summary="Dashboards the caller may open")
async def list_dashboards(
    request: Request,
    all_boards: BoardsDep,
    principal: PrincipalDep,
    base: BaseUrlDep,
    f: str | None = None,
):
    """Public dashboards for everyone, internal ones for city users (as map views)."""
    visible = [b for b in all_boards.values() if model.can_open(principal, b)]
    doc = {"dashboards": [_doc(b, base) for b in visible], "numberOfDashboards": len(visible)}
    if negotiate(request, f) == "html":
        return render(request, "dashboards/index.html", {"doc": doc, "principal": principal})
    return doc


@router.get(
    "/{board_id}/data", summary="A dashboard's panels under a filter", description=FILTER_DOC
)
async def board_data(request: Request, call: BoardCallDep):
    """KPIs, category bar, status and channel pies, time series, handling-unit ranking, counts
    per unit and alerts: the same numbers as direct SQL over the filter, cached per data
    version."""
    data = await _panels(request, call)
    return Response(
        orjson.dumps(data),
        media_type="application/json",
        headers={"Cache-Control": "private, no-store"},
    )


@router.get(
    "/{board_id}/panels/{panel}.csv",
    summary="One panel as CSV",
    description=FILTER_DOC,
    response_class=Response,
)
async def board_panel_csv(
    request: Request,
    panel: Annotated[
        str, Path(description="kpi, category, status, channel, series, ranking, units, alerts")
    ],
    call: BoardCallDep,
):
    """The panel's rows as the dashboard shows them (UTF-8 with BOM)."""
    data = await _panels(request, call)
    return Response(
        panel_csv(data, panel),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{call.board.id}-{panel}.csv"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get(
    "/{board_id}/points",
    summary="The newest reports under a dashboard's state",
    description=FILTER_DOC
    + " Without 'from' and 'to', every time (the page sends the range its panels show).",
    response_class=Response,
)
async def board_points(
    request: Request,
    call: BoardCallDep,
    limit: Annotated[int, Query(ge=1, le=MAX_POINTS, description="Reports, newest first")] = POINTS,
):
    """What the map draws: a FeatureCollection of the newest reports under every filter of the
    state, the unit filter too (the panels' unit membership), with `numberReturned` and
    `truncated` (at most the caller's row cap), cached per data version."""
    state = _state(request, call.board, (*PAGE_ONLY, "limit"))
    body = await newest_points(
        call.pool, call.catalog, call.principal, call.settings, call.board, state, limit
    )
    return Response(body, media_type=media.GEOJSON, headers={"Cache-Control": "private, no-store"})


@router.get("/{board_id}/units", summary="The unit shapes a dashboard's map colours")
async def board_units(
    board_id: str,
    all_boards: BoardsDep,
    principal: PrincipalDep,
    catalog: CatalogDep,
    pool: PoolDep,
    units: Annotated[Literal["district", "ward", "ward2019"], Query()] = "district",
):
    """2019 districts, 2025 wards or 2019 wards (simplified, with code and name)."""
    model.get_dashboard(all_boards, board_id, principal)
    body = await unit_shapes(pool, catalog, principal, units)
    return Response(
        body, media_type=media.GEOJSON, headers={"Cache-Control": "private, max-age=300"}
    )


@router.get(
    "/{board_id}", summary="A dashboard", response_class=HTMLResponse, description=FILTER_DOC
)
async def board_page(
    request: Request,
    board_id: str,
    all_boards: BoardsDep,
    principal: PrincipalDep,
    catalog: CatalogDep,
    settings: MapsSettingsDep,
    lang: Annotated[Literal["vi", "en"] | None, Query()] = None,
    layout: Annotated[Literal["wall", "desk"] | None, Query()] = None,
):
    """The page: a Folium map of units beside the panels; its state is its URL."""
    board = all_boards.get(board_id)
    if board is not None and not model.can_open(principal, board):
        if "text/html" in request.headers.get("accept", ""):
            query = f"?{request.url.query}" if request.url.query else ""
            here = _safe_next(request, base_path(request) + app_path(request) + query)
            return RedirectResponse(
                f"{page_base(request)}/maps/session?next={quote(here, safe='')}", 303
            )
        raise NotAuthenticated(
            f"The dashboard '{board_id}' is for city users: send an API key or open a map "
            "session (POST /maps/session)."
        )
    board = model.get_dashboard(all_boards, board_id, principal)
    state = _state(request, board)
    catalog.get(board.layer, principal)
    nonce = new_nonce()
    html = await run_in_threadpool(
        render_dashboard,
        board,
        catalog,
        principal,
        state,
        lang=lang or board.language,
        layout=layout or board.layout,
        base_url=page_base(request),
        nonce=nonce,
    )
    return HTMLResponse(html, headers=page_headers(settings, False, nonce))
