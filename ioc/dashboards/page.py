"""A dashboard's HTML page: a Folium map (ioc's own basemap, as ``ioc.maps.render`` builds
it) beside the panels' frames. The page holds no data: ``ioc/dashboards/js/dashboard.js`` reads
``/dashboards/{id}/data`` and ``/units``, draws the charts with ECharts (npm, served by ioc) and
follows the layer's change events. Same CSP as the map pages: scripts from ioc or with the
page's nonce, nothing inline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog
from ioc.dashboards.filters import BoardFilter
from ioc.dashboards.model import Dashboard
from ioc.maps import elements
from ioc.maps.render import _take_scripts, build_map
from ioc.maps.views import (
    Basemap,
    BasemapLayer,
    LabelLayer,
    MapView,
    ViewLayer,
    ViewPlan,
    plan_view,
)

JS_DIR = Path(__file__).parent / "js"
STATIC = "/static/dashboards"
THEMES = {"wall": "dark", "desk": "light"}

STRINGS: dict[str, tuple[str, str]] = {
    "today": ("Hôm nay", "Today"),
    "open": ("Đang mở", "Open"),
    "overdue": ("Quá hạn", "Overdue"),
    "median": ("Thời gian xử lý (trung vị, giờ)", "Median time to close (h)"),
    "total": ("Tổng số", "Total"),
    "category": ("Theo lĩnh vực", "By field"),
    "status": ("Theo tình trạng", "By status"),
    "channel": ("Theo kênh tiếp nhận", "By channel"),
    "series": ("Theo thời gian", "Over time"),
    "ranking": ("Đơn vị xử lý", "Handling units"),
    "unit": ("Đơn vị", "Unit"),
    "map": ("Bản đồ", "Map"),
    "filters": ("Bộ lọc", "Filters"),
    "none": ("Không có bộ lọc", "No filter"),
    "clear": ("Xoá bộ lọc", "Clear filters"),
    "alerts": ("Cảnh báo", "Alerts"),
    "no_alert": ("Không có cảnh báo", "No alert"),
    "from": ("Từ", "From"),
    "to": ("Đến", "To"),
    "day": ("Theo ngày", "Daily"),
    "hour": ("Theo giờ", "Hourly"),
    "district": ("Quận, huyện (2019)", "Districts (2019)"),
    "ward": ("Phường, xã (2025)", "Wards (2025)"),
    "ward2019": ("Phường, xã (trước 2025)", "Wards (pre-2025)"),
    "handling_unit": ("Đơn vị xử lý", "Handling unit"),
    "csv": ("CSV", "CSV"),
    "png": ("PNG", "PNG"),
    "print": ("In / PDF", "Print / PDF"),
    "live": ("Trực tiếp", "Live"),
    "loading": ("Đang tải…", "Loading…"),
    "error": ("Lỗi tải dữ liệu", "Could not load"),
    "city": ("Toàn thành phố", "Whole city"),
    "wall": ("Màn hình lớn", "Wall"),
    "desk": ("Bàn làm việc", "Desk"),
    # The map's note on its reports ({shown}, {total}: numbers formatted by the script).
    "points": ("{shown} phản ánh trên bản đồ", "{shown} reports on the map"),
    "points_capped": ("{shown} / {total} phản ánh mới nhất", "newest {shown} of {total} reports"),
}


def _t(lang: str) -> dict[str, str]:
    return {k: vi if lang == "vi" else en for k, (vi, en) in STRINGS.items()}


def map_view(board: Dashboard, theme: str) -> MapView:
    """The dashboard's map as a view: ioc's own basemap; units and reports are drawn by the
    dashboard's script, filtered."""
    return MapView(
        id=f"dash-{board.id}"[:41],
        title=board.title,
        description=board.description,
        audience=board.audience,
        layout="portal",
        theme=theme,  # type: ignore[arg-type]
        center=board.center,
        zoom=board.zoom,
        min_zoom=8,
        max_zoom=18,
        basemap=Basemap(
            background="#0b1220" if theme == "dark" else "#eef0f2",
            layers=[BasemapLayer(layer="water_areas"), BasemapLayer(layer="roads")],
        ),
        layers=[ViewLayer(layer=board.layer, kind="tiles", show=False)],
        # Place and street names as on the wall (dropped for a caller who may not read them).
        labels=[
            LabelLayer(
                layer="districts_2024",
                property="district_name",
                kind="district",
                min_zoom=9,
                max_zoom=12,
            ),
            LabelLayer(layer="wards", property="name", kind="ward", min_zoom=12, max_zoom=19),
            LabelLayer(layer="roads", property="name", kind="street", min_zoom=14, max_zoom=19),
        ],
        legend=False,
        layer_control=False,
    )


_env = Environment(
    loader=FileSystemLoader(str(JS_DIR)),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def page_config(
    board: Dashboard,
    catalog: Catalog,
    principal: Principal,
    state: BoardFilter,
    lang: str,
    layout: str,
    base: str,
) -> dict[str, Any]:
    """What the page script needs: URLs, the state, labels, thresholds (text from the catalog
    and the dashboard file, put in the page with textContent by the script)."""
    layer = catalog.get(board.layer, principal)
    labels = {a.name: a.label_vi if lang == "vi" else a.label_en for a in layer.attributes}
    return {
        "id": board.id,
        "lang": lang,
        "layout": layout,
        "base": base,
        "layer": board.layer,
        "data": f"{base}/dashboards/{board.id}/data",
        "units": f"{base}/dashboards/{board.id}/units",
        "points": f"{base}/dashboards/{board.id}/points",
        # The whole city: where the map goes back to when the unit filter is cleared.
        "center": list(board.center),
        "zoom": board.zoom,
        "csv": f"{base}/dashboards/{board.id}/panels/",
        "items": f"{base}/collections/{board.layer}/items",
        "events": f"{base}/events?layers={board.layer}",
        "fields": board.fields.model_dump(),
        "labels": labels,
        "state": state.query(),
        "thresholds": [
            {"metric": t.metric, "above": t.above, "colour": t.colour, "label": t.label.get(lang)}  # type: ignore[arg-type]
            for t in board.thresholds
        ],
        "strings": _t(lang),
    }


def render_dashboard(
    board: Dashboard,
    catalog: Catalog,
    principal: Principal,
    state: BoardFilter,
    *,
    lang: str,
    layout: str,
    base_url: str,
    nonce: str,
) -> str:
    """The page of a dashboard for one caller."""
    base = base_url.rstrip("/")
    theme = THEMES[layout]
    plan = plan_view(map_view(board, theme), catalog, principal)
    # No layer of the view is drawn by ioc-maps.js: the script draws the filtered ones.
    plan = ViewPlan(plan.view, [], plan.basemap, plan.dropped, plan.labels)
    fmap = build_map(plan, lang=lang, base=base, embed=False)  # type: ignore[arg-type]
    figure = fmap.get_root()
    for child in figure._children.values():  # type: ignore[attr-defined]
        child.render()
    scripts, header = _take_scripts(figure)
    scripts += [
        elements.asset_url("echarts_js", base),
        f"{base}{STATIC}/dashboard.js",
    ]
    return _env.get_template("dashboard.html").render(
        board=board,
        lang=lang,
        layout=layout,
        theme=theme,
        title=board.title.get(lang),  # type: ignore[arg-type]
        description=board.description.get(lang),  # type: ignore[arg-type]
        t=_t(lang),
        config=page_config(board, catalog, principal, state, lang, layout, base),
        css=f"{base}{STATIC}/dashboard.css",
        map_header=Markup(header),
        map_html=Markup(figure.html.render()),  # type: ignore[attr-defined]
        map_script=Markup(figure.script.render()),  # type: ignore[attr-defined]
        scripts=scripts,
        nonce=nonce,
    )
