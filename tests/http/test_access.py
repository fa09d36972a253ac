"""No endpoint shows a restricted layer to anonymous callers or to another department.

The test walks every GET route of the app, so endpoints added later are covered too: routes
that name a layer must answer 404 for it, and listing routes must not mention it.
"""

from __future__ import annotations

import base64
import re

import pytest

# Values for path parameters other than the layer (a zoom-12 tile over central HCMC).
PARAM_VALUES = {
    "z": "12",
    "x": "3262",
    "y": "1923",
    "featureId": "1",
    "tileMatrixSetId": "WebMercatorQuad",
    "tileMatrix": "12",
    "tileRow": "1923",
    "tileCol": "3262",
}
# Query strings that make listing endpoints answer with content.
LISTING_QUERIES = {
    "/addresses": "?q=Bến Thành",
    "/addresses/reverse": "?lon=106.6990&lat=10.7798",
    "/whats-here": "?lon=106.6990&lat=10.7798",
    "/collections": "?limit=1000",
}
LAYER_PARAMS = {"collectionId", "layer_id", "layer", "layers", "ids", "collection_id"}
# Endless Server-Sent Events streams: a GET never ends; tests/http/test_events.py proves a
# stream never shows a layer the caller may not read.
STREAMS = {"/events"}


def _get_paths(client) -> list[str]:
    """Every GET path the app documents (the OpenAPI spec lists routes of included routers
    too, whatever FastAPI does with them internally)."""
    spec = client.get("/openapi.json").json()
    return [path for path, ops in spec["paths"].items() if "get" in ops and path not in STREAMS]


def _fill(path: str, layer_id: str) -> str | None:
    params = re.findall(r"{([^}]+)}", path)
    if not any(p in LAYER_PARAMS for p in params):
        return None
    for name in params:
        value = layer_id if name in LAYER_PARAMS else PARAM_VALUES.get(name, "1")
        path = path.replace("{" + name + "}", value)
    return path


@pytest.fixture(scope="module")
def restricted(client):
    layers = [la for la in client.app.state.catalog if la.access == "restricted"]
    if not layers:
        pytest.skip("the catalog has no restricted layer")
    return layers


@pytest.fixture(scope="module")
def outsiders(make_key, restricted):
    """Callers who must not see the restricted layers: anonymous, operator, analyst, and a
    publisher of another department."""
    other = "tourism" if restricted[0].department != "tourism" else "health"
    callers = {
        "anonymous": {},
        **{
            label: {"Authorization": f"Bearer {make_key(role, dept)}"}
            for label, role, dept in (
                ("operator", "operator", None),
                ("analyst", "analyst", None),
                ("other-department", "publisher", other),
            )
        },
    }
    # The same key as the password of HTTP Basic (QGIS) reads no more than as a Bearer token.
    callers["other-department-basic"] = basic(callers["other-department"]["Authorization"][7:])
    return callers


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"qgis:{key}".encode()).decode()}


def test_routes_naming_a_restricted_layer_answer_404(client, restricted, outsiders):
    paths = _get_paths(client)
    assert len(paths) > 20
    checked = 0
    for layer in restricted[:5]:
        for template in paths:
            path = _fill(template, layer.id)
            if path is None:
                continue
            for who, headers in outsiders.items():
                response = client.get(path, headers=headers)
                assert response.status_code == 404, (who, path, response.status_code)
                checked += 1
    assert checked > 0


def test_listings_never_mention_restricted_layers(client, restricted, outsiders):
    listing_paths = [p for p in _get_paths(client) if "{" not in p and not p.startswith("/static")]
    assert "/catalog/layers" in listing_paths
    for who, headers in outsiders.items():
        for path in listing_paths:
            response = client.get(path + LISTING_QUERIES.get(path, ""), headers=headers)
            if response.status_code != 200:
                continue
            for layer in restricted:
                assert f'"{layer.id}"' not in response.text, (who, path, layer.id)
                assert f"/{layer.id}" not in response.text, (who, path, layer.id)


def test_owning_department_and_admin_see_the_layer(client, restricted, make_key):
    layer = restricted[0]
    owner = make_key("publisher", layer.department)
    for headers in (
        {"Authorization": f"Bearer {owner}"},
        basic(owner),
        {"Authorization": f"Bearer {make_key('admin')}"},
    ):
        assert client.get(f"/catalog/layers/{layer.id}", headers=headers).status_code == 200
        ids = [la["id"] for la in client.get("/catalog/layers", headers=headers).json()["layers"]]
        assert layer.id in ids


def test_unknown_key_is_401_not_anonymous(client):
    for headers in ({"Authorization": "Bearer ioc_nope"}, basic("ioc_nope")):
        response = client.get("/catalog/layers", headers=headers)
        assert response.status_code == 401
        # Both ways to send a key, Basic first: QGIS and GDAL then retry with credentials.
        assert response.headers.get_list("www-authenticate") == [
            'Basic realm="ioc", charset="UTF-8"',
            'Bearer realm="ioc"',
        ]
