"""Catalog endpoints as different callers see them."""


def _ids(client, headers=None):
    return {
        la["id"]: la for la in client.get("/catalog/layers", headers=headers or {}).json()["layers"]
    }


def test_anonymous_sees_only_public_layers(client):
    layers = _ids(client)
    assert layers and {la["access"] for la in layers.values()} == {"public"}


def test_operator_sees_internal_but_not_restricted(client, make_key):
    layers = _ids(client, {"Authorization": f"Bearer {make_key('operator')}"})
    access = {la["access"] for la in layers.values()}
    assert "internal" in access and "restricted" not in access


def test_admin_sees_everything(client, make_key):
    layers = _ids(client, {"Authorization": f"Bearer {make_key('admin')}"})
    assert len(layers) == len(client.app.state.catalog) >= 200


def test_layer_document_has_schema_extent_counts_licence(client):
    public = next(iter(_ids(client).values()))
    doc = client.get(public["href"].replace("http://testserver", "")).json()
    assert doc["id"] == public["id"]
    assert doc["attributes"] and all("vi" in a["label"] for a in doc["attributes"])
    assert doc["feature_count"] > 0 and doc["extent"]["bbox"][0][0] < doc["extent"]["bbox"][0][2]
    assert doc["source"]["licence"]
    html = client.get(f"/catalog/layers/{public['id']}?f=html")
    assert html.status_code == 200 and public["title"]["vi"] in html.text


def test_domain_filter(client):
    layers = client.get("/catalog/layers?domain=admin").json()["layers"]
    assert layers and all(la["domain"] == "admin" for la in layers)


def _search(client, **params):
    response = client.get("/catalog/layers", params=params)
    assert response.status_code == 200, response.text
    return [la["id"] for la in response.json()["layers"]]


def test_search_is_diacritic_insensitive_and_titles_come_first(client):
    plain, marked = _search(client, q="diem ngap"), _search(client, q="Điểm NGẬP")
    assert plain == marked and plain[0] == "flood_points"
    found = _search(client, q="ngap")
    assert {"flood_points", "flood_warnings", "flood_risk_zones", "flood_sensors"} <= set(found)
    assert "schools" not in found and len(found) < len(_search(client))
    assert _search(client, q="zzqx") == []


def test_filters_combine(client, make_key):
    key = {"Authorization": f"Bearer {make_key('admin')}"}
    every = client.get("/catalog/layers", headers=key).json()["layers"]
    flooding = [
        client.app.state.catalog.find(la["id"]) for la in every if la["domain"] == "flooding"
    ]
    for name in ("department", "access", "cadence"):
        value = getattr(flooding[-1], name)
        found = client.get(
            "/catalog/layers", params={name: value, "domain": "flooding"}, headers=key
        ).json()["layers"]
        doc = {la["id"]: la for la in every}
        assert found, name
        for la in found:
            layer = client.app.state.catalog.find(la["id"])
            assert la["domain"] == "flooding" and getattr(layer, name) == value
            assert doc[la["id"]] == la


def test_bad_filters_are_400_with_one_sentence(client):
    for params, word in (({"access": "secret"}, "access"), ({"cadence": "often"}, "cadence")):
        response = client.get("/catalog/layers", params=params)
        assert response.status_code == 400 and word in response.text
    long = client.get("/catalog/layers", params={"q": "x" * 201})
    assert long.status_code == 400 and "longer than 200" in long.text


def test_catalog_page_shows_names_owner_licence_and_ways_to_use(client):
    page = client.get("/catalog/layers", params={"f": "html", "q": "ngap"}).text
    assert 'data-layer="flood_points"' in page and 'data-layer="schools"' not in page
    assert "Chống ngập và thoát nước" in page and "Sở Xây dựng" in page  # Vietnamese names
    assert "OAPIF:http://testserver" in page  # GDAL's URL, absolute: pasted elsewhere
    assert "/maps/preview/flood_points" in page and "&lt;iframe src=" in page
    assert 'value="ngap"' in page


def test_front_page_by_caller(client, make_key):
    anonymous = client.get("/", headers={"Accept": "text/html"}).text
    assert 'href="/maps/portal"' in anonymous and 'data-view="wall"' not in anonymous
    assert "Chống ngập và thoát nước" in anonymous and 'href="/publish"' not in anonymous
    key = make_key("publisher", "construction")
    staff = client.get("/", headers={"Accept": "text/html", "Authorization": f"Bearer {key}"}).text
    assert 'data-view="wall"' in staff and 'href="/dashboards"' in staff
    assert 'href="/publish"' in staff and "Lớp của Sở Xây dựng" in staff
    assert client.get("/").json()["links"]  # JSON unchanged for machines


def test_feature_page_lists_linked_addresses(client, db):
    with db.cursor() as cur:
        cur.execute("SELECT fid, code FROM ioc.address_links WHERE layer_id = 'bus_stops' LIMIT 1")
        fid, code = cur.fetchone()
    page = client.get(f"/collections/bus_stops/items/{fid}", params={"f": "html"}).text
    assert f"<code>{code}</code>" in page and 'id="ioc-geojson"' in page
    odd = client.get("/collections/fx_odd_names/items", params={"f": "html"})
    assert odd.status_code == 200
