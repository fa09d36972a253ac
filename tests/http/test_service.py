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
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc123"}).headers["x-request-id"]
        == "abc123"
    )
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


async def _session_state(pool) -> list[tuple]:
    """Every idle connection's session settings, listens and advisory locks, at once."""
    connections = [await pool.acquire() for _ in range(pool.get_idle_size())]
    try:
        return [
            tuple(
                await conn.fetchrow(
                    "SELECT current_setting('statement_timeout') AS timeout,"
                    " current_setting('TimeZone') AS tz, current_setting('plan_cache_mode') AS plans,"
                    " (SELECT count(*) FROM pg_listening_channels()) AS listens,"
                    " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    "  AND pid = pg_backend_pid()) AS locks,"
                    " (SELECT count(*) FROM pg_cursors WHERE is_holdable) AS cursors"
                )
            )
            for conn in connections
        ]
    finally:
        for conn in connections:
            await pool.release(conn)


def test_requests_leave_no_session_state_on_pooled_connections(client):
    """The pool returns connections without asyncpg's RESET ALL round trip (ioc.db.connection): that
    is only safe while no request leaves session state behind — checked here after requests
    that set transaction-local options (queries, statistics) and stream through cursors."""
    pool = client.app.state.pool
    before = set(client.portal.call(_session_state, pool))
    for _ in range(3):
        assert (
            client.post("/query", json={"source": "digital_addresses", "limit": 5}).status_code
            == 200
        )
        assert client.get("/collections/wards/items?limit=3&f=csv").status_code == 200
        assert client.get("/stats/reports_1022_public/by-ward").status_code == 200
    after = client.portal.call(_session_state, pool)
    assert set(after) == before and len(before) == 1  # all alike, as fresh as before
    timeout, tz, plans, listens, locks, cursors = after[0]
    assert (listens, locks, cursors) == (0, 0, 0) and plans == "auto"


def test_start_up_objects_are_kept_out_of_full_collections(settings):
    """What start-up loaded is frozen (a full collection would otherwise walk it all, every
    request waiting ~90 ms), and unfrozen on the way out so a discarded app can be collected."""
    import gc

    from fastapi.testclient import TestClient

    from api.app import create_app

    gc.unfreeze()
    with TestClient(create_app(settings)) as app_client:
        assert gc.get_freeze_count() > 0
        assert app_client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == 0
