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
