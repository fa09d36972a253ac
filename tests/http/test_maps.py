"""Map pages over HTTP (no browser): views as data, access, embedding, local assets, sessions."""

from __future__ import annotations

import json
import re
import subprocess
from html import unescape
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ioc.catalog.access import ANONYMOUS, Principal, can_read
from ioc.catalog.layers import Catalog, layer_from_row
from ioc.maps import elements as map_assets
from ioc.maps import render
from ioc.maps import views as maps
from ioc.settings import PROJECT_ROOT
from tests.conftest import VENV_BIN, server_env

LAYER_CALL = re.compile(
    r"IocMaps\.(features|tiles|heatmap|choropleth)\(\s*map_\w+,\s*(\{.*?\})\);", re.S
)


def layer_configs(html: str) -> list[dict]:
    """The per-layer configurations a rendered page hands to its script."""
    return [json.loads(m.group(2)) for m in LAYER_CALL.finditer(html)]


def layer_ids(html: str) -> set[str]:
    ids = set()
    for config in layer_configs(html):
        ids.add(config["id"])
        ids.update(sub["id"] for sub in config.get("layers") or ())
    return ids - {"basemap"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def operator(make_key):
    return bearer(make_key("operator"))


# --- views as data (no database) -----------------------------------------------------------


def test_every_view_file_validates_and_names_catalog_layers():
    views = maps.load_views()
    assert {"wall", "portal"} <= set(views)
    manifests = {p.stem for p in (PROJECT_ROOT / "layers" / "catalog").glob("*/*.yaml")}
    for view in views.values():
        named = {la.layer for la in view.layers} | {b.layer for b in view.basemap.layers}
        assert named <= manifests, (view.id, named - manifests)
    assert views["wall"].audience == "internal" and views["portal"].audience == "public"


GOOD = {
    "id": "demo",
    "title": {"vi": "a", "en": "a"},
    "description": {"vi": "a", "en": "a"},
    "audience": "public",
    "center": [10.77, 106.70],
    "zoom": 12,
    "layers": [{"layer": "wards"}],
}


@pytest.mark.parametrize(
    "change",
    [
        {"id": "session"},  # clashes with /maps/session
        {"zoom": 25},
        {"zoom": 5, "min_zoom": 8},
        {"center": [106.70, 10.77]},  # lon/lat swapped
        {"layers": [{"layer": "wards"}, {"layer": "wards"}]},
        {"layers": [{"layer": "wards", "kind": "choropleth"}]},  # no property
        {
            "layers": [
                {"layer": "wards", "kind": "choropleth", "property": "population", "breaks": [3, 1]}
            ]
        },
        {"refresh": 2},
        {"layers": [{"layer": "wards", "limit": 0}]},
        {"layers": [{"layer": "Wards; DROP"}]},
        {"basemap": {"layers": [{"layer": "roads", "color": "red"}]}},
        {"unknown": True},
    ],
)
def test_invalid_views_are_rejected(change):
    MapView = maps.MapView
    MapView.model_validate(GOOD)
    with pytest.raises(ValidationError):
        MapView.model_validate({**GOOD, **change})


def test_view_file_id_must_match_its_name(tmp_path):
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(GOOD))
    with pytest.raises(maps.ViewError):
        maps.load_views(tmp_path)


def test_frame_ancestors_setting_refuses_header_injection():
    assert (
        maps.MapsSettings(frame_ancestors="'self'  https://a.vn").frame_ancestors
        == "'self' https://a.vn"
    )
    for bad in ("'self'; script-src *", "https://a.vn,https://b.vn", "a\r\nX-Evil: 1", ""):
        with pytest.raises(ValidationError):
            maps.MapsSettings(frame_ancestors=bad)


def _fake_layer(**change) -> dict:
    manifest = {
        "attributes": [
            {"name": "name", "type": "text", "label": {"vi": "Tên</script>", "en": "Name"}}
        ],
        "style": {
            "color": "#123456",
            "legend": [
                {"label": {"vi": "<img src=x onerror=alert(1)>", "en": "x"}, "color": "#123456"}
            ],
        },
        "zoom": {"min": 8, "max": 18},
    }
    row = {
        "id": "evil",
        "schema_name": "data",
        "table_name": "evil",
        "geometry_column": "geom",
        "id_column": "fid",
        "geometry_type": "Point",
        "srid": 4326,
        "title_vi": "</script><script>alert('vi')</script>",
        "title_en": "<b>en</b>",
        "description_vi": "",
        "description_en": "",
        "domain": "safety",
        "department": "police",
        "access": "public",
        "cadence": "static",
        "origin": "manifest",
        "manifest": manifest,
        "metadata": {},
        "feature_count": 3,
        "extent": [106.6, 10.7, 106.8, 10.9],
        "version": 1,
        "last_update": None,
    }
    row.update(change)
    return row


def control_names(html: str) -> list[str]:
    """The layer switcher's names as the page hands them to Leaflet (which sets innerHTML)."""
    block = re.search(r"overlays :\s*\{(.*?)\},", html, re.S)
    return [json.loads(name) for name in re.findall(r'^\s*("(?:[^"\\]|\\.)*")\s*:', block[1], re.M)]


def test_rendered_page_escapes_catalog_text():
    catalog = Catalog([layer_from_row(_fake_layer())])
    layer = catalog.get("evil", ANONYMOUS)
    html = render.render_page(maps.plan_view(maps.preview_view(layer), catalog, ANONYMOUS))
    assert "<script>alert(" not in html and "<img src=x" not in html
    assert "</script><script>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # legend, autoescaped
    assert layer_configs(html)[0]["title"] == "</script><script>alert('vi')</script>"
    # Leaflet's layer control sets the name as innerHTML: it gets HTML text, shown as the title.
    assert control_names(html) == [
        "&lt;/script&gt;&lt;script&gt;alert(&#39;vi&#39;)&lt;/script&gt;"
    ]
    english = render.render_page(
        maps.plan_view(maps.preview_view(layer), catalog, ANONYMOUS), lang="en"
    )
    assert control_names(english) == ["&lt;b&gt;en&lt;/b&gt;"]


def test_every_page_template_autoescapes():
    """Catalog and caller text in any HTML template is escaped (no template opts out)."""
    from api.html import templates

    names = [
        str(p.relative_to(PROJECT_ROOT / "api" / "templates"))
        for p in (PROJECT_ROOT / "api" / "templates").rglob("*.html")
    ]
    assert len(names) >= 10
    for name in names:
        assert templates.env.autoescape(name) is True, name
        source = (PROJECT_ROOT / "api" / "templates" / name).read_text()
        assert "|safe" not in source.replace(" ", "") and "autoescape false" not in source, name
    assert render._env.autoescape("page.html") is True


SCRIPT_TAG = re.compile(r"<script\b[^>]*>", re.I)


def nonce_of(response) -> str:
    """The response's script nonce; its CSP allows no inline script or eval."""
    csp = response.headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src")).split()
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src, csp
    assert "'strict-dynamic'" not in script_src and "*" not in script_src, csp
    nonces = [s for s in script_src if s.startswith("'nonce-")]
    assert len(nonces) == 1, csp
    return nonces[0][len("'nonce-") : -1]


@pytest.mark.parametrize(
    ("path", "staff"),
    [
        ("/maps/portal", False),
        ("/maps/portal?embed=1&lang=en", False),
        ("/maps/wall", True),
        ("/maps/wall?embed=1", True),
        ("/maps/preview/flood_points", False),
        ("/maps/preview/roads", True),
        ("/maps/preview/ward_indicators?lang=en", True),
    ],
)
def test_every_script_of_a_page_carries_the_responses_nonce(client, operator, path, staff):
    headers = operator if staff else {}
    first, second = (client.get(path, headers=headers) for _ in range(2))
    assert first.status_code == 200, first.text
    nonce = nonce_of(first)
    assert len(nonce) >= 22 and nonce != nonce_of(second)  # fresh per response
    tags = SCRIPT_TAG.findall(first.text)
    assert len(tags) >= 5  # 4 files + the map
    assert all(f'nonce="{nonce}"' in tag for tag in tags), tags
    assert sum("src=" not in tag for tag in tags) == 1  # one inline script
    # No handler attributes: the CSP would refuse them (and no script may depend on them).
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", first.text, re.I)
    assert "javascript:" not in first.text.lower()


def test_rendered_file_carries_its_own_script_policy():
    catalog = Catalog([layer_from_row(_fake_layer())])
    plan = maps.plan_view(maps.preview_view(catalog.get("evil", ANONYMOUS)), catalog, ANONYMOUS)
    html = render.render_page(plan, base_url="https://ioc.example.vn", meta_csp=True)
    meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    policy = unescape(meta[1])  # as the browser reads the attribute
    nonce = re.search(r"'nonce-([^']+)'", policy)[1]
    assert policy.startswith("script-src https://ioc.example.vn 'nonce-")
    assert all(f'nonce="{nonce}"' in tag for tag in SCRIPT_TAG.findall(html))
    assert "Content-Security-Policy" not in render.render_page(plan)


def test_plan_drops_layers_the_caller_may_not_read():
    catalog = Catalog(
        [
            layer_from_row(_fake_layer(id="open")),
            layer_from_row(_fake_layer(id="staff", access="internal")),
            layer_from_row(_fake_layer(id="police", access="restricted")),
        ]
    )
    view = maps.MapView.model_validate(
        {
            **GOOD,
            "layers": [
                {"layer": "open"},
                {"layer": "staff"},
                {"layer": "police"},
                {"layer": "missing"},
            ],
        }
    )
    for principal, expected in (
        (ANONYMOUS, {"open"}),
        (Principal(role="operator"), {"open", "staff"}),
        (Principal(role="publisher", department="police"), {"open", "staff", "police"}),
    ):
        plan = maps.plan_view(view, catalog, principal)
        assert {item.layer.id for item in plan.layers} == expected
        assert layer_ids(render.render_page(plan)) == expected
        assert "missing" in plan.dropped


# --- assets: installed from npm, served by ioc ---------------------------------------------


def test_vendor_assets_are_installed_from_the_lock_file():
    package = json.loads((PROJECT_ROOT / "package.json").read_text())
    lock = json.loads((PROJECT_ROOT / "package-lock.json").read_text())
    assert map_assets.vendor_packages() <= set(package["dependencies"])
    for name in map_assets.vendor_packages():
        assert lock["packages"][f"node_modules/{name}"]["version"] == package["dependencies"][name]
    assert map_assets.missing_vendor_files() == [], "run scripts/setup.sh (npm ci --omit=dev)"


def test_static_assets_are_served_and_node_modules_is_not_exposed(client):
    for name in (*map_assets.VENDOR, *map_assets.OWN):
        response = client.get(map_assets.asset_url(name))
        assert response.status_code == 200, name
        assert response.headers["content-type"].split(";")[0] in (
            "text/javascript",
            "application/javascript",
            "text/css",
        ), name
    assert client.get("/static/vendor/leaflet/dist/images/layers.png").status_code == 200
    for path in (
        "/static/vendor/pbf/package.json",
        "/static/vendor/leaflet/../../package.json",
        "/static/vendor/%2e%2e/package.json",
        "/static/maps/../maps.py",
    ):
        assert client.get(path).status_code == 404, path


# --- pages ---------------------------------------------------------------------------------


def _assets_of(html: str) -> list[str]:
    """Scripts and stylesheets of a page (the favicon is an inline data: URL)."""
    return [
        url
        for url in re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
        if not url.startswith("data:")
    ]


def test_portal_is_public_local_and_phone_ready(client):
    response = client.get("/maps/portal")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert (
        '<html lang="vi">' in html and 'name="viewport"' in html and "user-scalable=no" not in html
    )
    assert 'id="ioc-search"' in html and 'href="/maps/portal?lang=en"' in html
    assert map_assets.external_urls(html) == []
    assets = _assets_of(html)
    assert assets and all(a.startswith("/static/") for a in assets)
    for url in assets:
        assert client.get(url).status_code == 200, url
    ids = layer_ids(html)
    assert {"flood_points", "congestion_segments"} <= ids
    catalog = client.app.state.catalog
    assert all(catalog.get(i, ANONYMOUS).access == "public" for i in ids)
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in csp and "connect-src 'self'" in csp
    assert "script-src 'self'" in csp and "http" not in csp


def test_portal_in_english(client):
    html = client.get("/maps/portal?lang=en").text
    assert '<html lang="en">' in html and "Ho Chi Minh City map for citizens" in html
    assert 'href="/maps/portal?lang=vi"' in html and "Tiếng Việt" in html
    assert client.get("/maps/portal?lang=fr").status_code == 400


def test_every_data_url_of_a_page_answers(client, operator):
    """The layers' GeoJSON and tile URLs are the public API's, and they work for the caller."""
    configs = [
        *layer_configs(client.get("/maps/wall", headers=operator).text),
        *layer_configs(client.get("/maps/portal").text),
    ]
    assert {c["kind"] for c in configs} >= {"basemap", "tiles", "features", "heatmap", "choropleth"}
    for config in configs:
        url = config["url"]
        if config["kind"] in ("tiles", "basemap"):
            # Versioned as TileJSON hands them out (docs/scaling.md).
            assert re.fullmatch(r"/tiles/[^/]+/\{z\}/\{x\}/\{y\}\.pbf\?v=\d+\.[0-9a-f]{8}", url)
            response = client.get(url.format(z=12, x=3262, y=1923), headers=operator)
            assert response.status_code in (200, 204), (url, response.status_code)
        else:
            assert url.startswith(f"/collections/{config['id']}/items?")
            response = client.get(
                url.replace("limit=10000", "limit=5").replace("limit=2000", "limit=5"),
                headers=operator,
            )
            assert response.status_code == 200, (url, response.text[:300])
            assert response.json()["type"] == "FeatureCollection"


def test_wall_is_for_city_users_only(client, operator):
    assert client.get("/maps/wall").status_code == 401
    page = client.get(
        "/maps/wall?refresh=30", headers={"Accept": "text/html"}, follow_redirects=False
    )
    assert page.status_code == 303
    assert page.headers["location"] == "/maps/session?next=%2Fmaps%2Fwall%3Frefresh%3D30"
    form = client.get(page.headers["location"])
    assert 'action="/maps/session"' in form.text
    assert 'name="next" value="/maps/wall?refresh=30"' in form.text
    response = client.get("/maps/wall", headers=operator)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-store"
    html = response.text
    configs = {c["id"]: c for c in layer_configs(html)}
    assert configs["reports_1022"]["kind"] == "heatmap"
    assert configs["reports_1022"]["gridUrl"].startswith("/collections/reports_1022/grid?filter=")
    assert configs["ward_indicators"]["kind"] == "choropleth"
    assert configs["flood_points"]["live"] is True and configs["ward_indicators"]["live"] is False
    assert 'id="ioc-clock"' in html and 'id="ioc-updated"' in html
    assert "crime_hotspots" not in html  # restricted: not for operators
    assert map_assets.external_urls(html) == []


def test_wall_shows_restricted_layers_to_their_department(client, make_key):
    html = client.get("/maps/wall", headers=bearer(make_key("publisher", "police"))).text
    assert "crime_hotspots" in layer_ids(html)


def page_config(html: str) -> dict:
    match = re.search(r"IocMaps\.page\(\s*map_\w+,\s*(\{.*?\})\);", html, re.S)
    assert match, "no IocMaps.page call"
    return json.loads(match.group(1))


def test_live_layers_follow_the_change_events(client, operator, make_key):
    """No timer: the page subscribes to the events of its live layers, and only of layers the
    caller may read (a police publisher's wall has crime_hotspots, not live, so not listed)."""
    for headers in (operator, bearer(make_key("publisher", "police"))):
        html = client.get("/maps/wall", headers=headers).text
        live = [c["id"] for c in layer_configs(html) if c["live"]]
        assert "reports_1022" in live and "flood_points" in live
        assert page_config(html)["live"] == f"/events?layers={','.join(live)}"
        assert 'id="ioc-live"' in html and "Đang kết nối" in html
        assert "refresh" not in html
    portal = client.get("/maps/portal").text
    url = page_config(portal)["live"]
    assert url == "/events?layers=flood_warnings,flood_points,congestion_segments"
    preview = client.get("/maps/preview/wards").text  # a preview follows its layer
    assert page_config(preview)["live"] == "/events?layers=wards"
    embed = client.get("/maps/portal?embed=1").text  # no header bar: the indicator floats
    assert 'id="ioc-live"' in embed


def test_a_view_file_with_a_refresh_period_says_why_it_is_refused():
    with pytest.raises(ValidationError, match="refresh' is gone"):
        maps.MapView.model_validate({**GOOD, "refresh": 60})
    layer = {"layer": "wards", "live": True, "refresh": 30}
    with pytest.raises(ValidationError, match="refresh' is gone"):
        maps.MapView.model_validate({**GOOD, "layers": [layer]})


def test_maps_list_by_audience(client, operator):
    anonymous = client.get("/maps").json()
    assert [v["id"] for v in anonymous["views"]] == ["portal"]
    staff = client.get("/maps", headers=operator).json()
    assert {"wall", "portal"} <= {v["id"] for v in staff["views"]}
    wall = next(v for v in staff["views"] if v["id"] == "wall")
    assert "crime_hotspots" not in wall["layers"] and "reports_1022" in wall["layers"]
    assert wall["embed"].endswith("/maps/wall?embed=1")
    assert client.get("/maps?f=html").status_code == 200
    assert client.get("/maps/nope").status_code == 404


def test_embed_is_chromeless_and_frame_ancestors_come_from_the_setting(client):
    html = client.get("/maps/portal?embed=1").text
    assert "ioc-embed" in html and 'class="ioc-bar"' not in html
    settings = client.app.state.settings
    saved = settings.maps
    settings.maps = maps.MapsSettings(frame_ancestors="'self' https://cong.hochiminhcity.gov.vn")
    try:
        csp = client.get("/maps/portal?embed=1").headers["content-security-policy"]
        assert csp.endswith("frame-ancestors 'self' https://cong.hochiminhcity.gov.vn")
    finally:
        settings.maps = saved
    assert "x-frame-options" not in {k.lower() for k in client.get("/maps/portal").headers}


def test_preview_of_readable_layers_only(client, operator):
    catalog = client.app.state.catalog
    public = catalog.get("flood_points", ANONYMOUS)
    response = client.get(f"/maps/preview/{public.id}")
    assert response.status_code == 200
    html = response.text
    assert public.title_vi in html
    for entry in public.style["legend"]:
        assert entry["label"]["vi"] in html  # the legend
    config = next(c for c in layer_configs(html) if c["id"] == public.id)
    assert {a["name"] for a in config["attributes"]} >= {"depth_cm", "status"}  # popups
    internal = next(la for la in catalog if la.access == "internal")
    assert client.get(f"/maps/preview/{internal.id}").status_code == 404
    assert client.get(f"/maps/preview/{internal.id}", headers=operator).status_code == 200
    restricted = next(la for la in catalog if la.access == "restricted")
    assert not can_read(Principal(role="operator"), restricted)
    assert client.get(f"/maps/preview/{restricted.id}", headers=operator).status_code == 404


# --- operators' session cookie -------------------------------------------------------------


def test_session_trades_a_key_for_an_httponly_cookie(client, make_key):
    key = make_key("operator")
    response = client.post("/maps/session", headers=bearer(key))
    assert response.status_code == 200 and response.json()["role"] == "operator"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("ioc_session=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/" in cookie
    token = response.cookies["ioc_session"]
    assert key not in cookie  # a session token, never the key (tests/http/test_auth.py)
    client.cookies.clear()
    try:
        page = client.get("/maps/wall", cookies={"ioc_session": token})
        assert page.status_code == 200 and "reports_1022" in layer_ids(page.text)
        assert client.get("/maps/wall", cookies={"ioc_session": "ioc_forged"}).status_code == 401
    finally:
        client.cookies.clear()


def test_session_form_redirects_only_to_map_pages(client, make_key):
    key = make_key("operator")
    try:
        for target, expected in (
            ("/maps/wall?refresh=30", "/maps/wall?refresh=30"),
            ("https://evil.example/maps", "/maps/wall"),
            ("//evil.example/maps", "/maps/wall"),
            ("/catalog/layers", "/maps/wall"),
        ):
            response = client.post(
                "/maps/session", data={"key": key, "next": target}, follow_redirects=False
            )
            assert response.status_code == 303, target
            assert response.headers["location"] == expected
        bad = client.post("/maps/session", data={"key": "ioc_wrong", "next": "/maps/wall"})
        assert bad.status_code == 401 and "set-cookie" not in bad.headers
        forged = client.post(
            "/maps/session", data={"key": key}, headers={"Origin": "https://evil.example"}
        )
        assert forged.status_code == 403
        closed = client.delete("/maps/session")
        assert closed.status_code == 204 and 'ioc_session=""' in closed.headers["set-cookie"]
    finally:
        client.cookies.clear()


def test_session_cookie_reads_internal_layers_through_the_api(client, make_key):
    """The page's own fetches carry only the cookie: api/deps.py must accept it on GET."""
    key = make_key("operator")
    client.cookies.clear()
    try:
        token = client.post("/maps/session", headers=bearer(key)).cookies["ioc_session"]
        client.cookies.clear()
        tile = client.get("/tiles/reports_1022/12/3262/1923.pbf", cookies={"ioc_session": token})
        assert tile.status_code in (200, 204), tile.status_code
        assert client.get("/tiles/reports_1022/12/3262/1923.pbf").status_code == 404
    finally:
        client.cookies.clear()


# --- the command ---------------------------------------------------------------------------


def test_cli_renders_a_view_for_another_server(db_settings, tmp_path: Path):
    out = tmp_path / "portal.html"
    base = "https://ioc.example.vn"
    result = subprocess.run(
        [
            str(VENV_BIN / "ioc"),
            "maps",
            "render",
            "portal",
            "-o",
            str(out),
            "--base-url",
            base,
            "--lang",
            "en",
        ],
        env=server_env(db_settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert '<html lang="en">' in html
    assets = _assets_of(html)
    assert assets and all(a.startswith(base + "/static/") for a in assets)
    assert all(c["url"].startswith(base + "/") for c in layer_configs(html))
    assert map_assets.external_urls(html, base) == []
    bad = subprocess.run(
        [str(VENV_BIN / "ioc"), "maps", "render", "nope", "-o", str(out)],
        env=server_env(db_settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "no map view 'nope'" in bad.stderr


@pytest.mark.parametrize(
    "path",
    [
        "/collections?f=html",
        "/collections/wards/queryables?f=html",
        "/conformance?f=html",
        "/maps?f=html",
        "/maps/session",
    ],
)
def test_template_pages_refuse_every_script(client, path):
    """Pages without script say so: markup that slipped past autoescaping still cannot run."""
    response = client.get(path)
    assert response.status_code == 200, response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "unsafe-eval" not in csp
    assert "<script" not in response.text.lower()
    assert response.headers["x-content-type-options"] == "nosniff"


SCRIPT_ELEMENT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S | re.I)


@pytest.mark.parametrize(
    "path",
    [
        "/?f=html",
        "/catalog/layers?f=html",
        "/collections/wards?f=html",
        "/collections/wards/items?f=html",
        "/collections/wards/items/1?f=html",
    ],
)
def test_pages_with_a_map_run_only_ioc_files(client, path):
    """The front page, catalog and feature pages run ioc's own files and Leaflet, nothing
    inline: every <script> has a src under /static, or is a JSON data block that never runs."""
    response = client.get(path)
    assert response.status_code == 200, response.text
    csp = response.headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["script-src"] == ["'self'"]  # no inline, no nonce, no eval
    scripts = SCRIPT_ELEMENT.findall(response.text)
    assert any("/static/web/ioc-web.js" in attrs for attrs, _ in scripts)
    for attrs, body in scripts:
        if 'type="application/json"' in attrs:
            assert "<" not in body  # tojson escapes <, > and & inside the block
        else:
            assert re.fullmatch(r'\s*src="/static/[^"]+"\s*', attrs) and not body.strip(), attrs
    assert response.headers["x-content-type-options"] == "nosniff"
