"""Service basics over HTTP: health, readiness, OpenAPI, docs, gzip, request ids, landing."""


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok" and ready.json()["pending"] == []


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"].startswith("ioc")
    assert "/readyz" in spec["paths"] and "/catalog/layers" in spec["paths"]
    assert "swagger" in client.get("/docs").text.lower()


def test_request_id_echoed_or_generated(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc123"}).headers["x-request-id"] == "abc123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 16


def test_gzip_for_large_responses(client):
    response = client.get("/catalog/layers", headers={"Accept-Encoding": "gzip"})
    assert response.headers.get("content-encoding") == "gzip"


def test_landing_page_links_everything(client):
    doc = client.get("/").json()
    rels = {link["rel"] for link in doc["links"]}
    assert {"self", "service-desc", "service-doc", "data", "status"} <= rels
    html = client.get("/", headers={"Accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html")
    assert "Máy chủ bản đồ" in html.text and "/docs" in html.text


def test_unknown_format_is_a_clear_400(client):
    response = client.get("/?f=xml")
    assert response.status_code == 400
    assert response.json()["parameter"] == "f"


def test_unknown_path_is_json_404(client):
    response = client.get("/no/such/thing")
    assert response.status_code == 404 and response.json()["code"] == "NotFound"
