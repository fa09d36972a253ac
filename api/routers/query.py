"""Spatial queries for analysts: ``POST /query``, query jobs and saved queries (derived layers).

Handlers parse (pydantic models, typed dependencies), call one domain function in ``ioc.query.runner``,
``ioc.query.jobs``, ``ioc.query.saved`` or ``ioc.query.saved_refresh`` and format. The job runner
is started and stopped by the app's lifespan through :func:`start_runner` and :func:`stop_runner`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from api.deps import CatalogDep, PrincipalDep, StateDep
from api.limits import TimedStreamingResponse, deadline_in
from api.openapi import Responses
from api.state import AppState
from api.urls import base_url
from ioc import media
from ioc.query import jobs, runner, saved, saved_refresh
from ioc.query.model import QUERY_EXAMPLES, QueryDoc, QuerySettings

router = APIRouter(prefix="/query", tags=["queries"])

ERRORS: Responses = {
    400: {"description": "Malformed query: the body names the offending field"},
    401: {"description": "An API key is needed (or it is unknown)"},
    404: {"description": "A layer that does not exist, or that the caller may not read"},
    503: {"description": "The query ran past the statement timeout of the caller's role"},
}
ANSWERS: Responses = {
    200: {
        "description": "GeoJSON features (or group rows), CSV or GeoPackage",
        "content": {
            runner.MEDIA_TYPES["geojson"]: {},
            media.CSV: {},
            runner.MEDIA_TYPES["gpkg"]: {},
        },
    }
}


async def get_query_settings(state: StateDep) -> QuerySettings:
    """The query settings (``IOC_QUERY_*``) of the app."""
    return state.settings.query


QuerySettingsDep = Annotated[QuerySettings, Depends(get_query_settings)]
QueryBody = Annotated[QueryDoc, Body(openapi_examples=QUERY_EXAMPLES)]
JobId = Annotated[str, Path(alias="jobId", description="Job id (a UUID)")]
SavedId = Annotated[str, Path(alias="savedId", description="Saved query (derived layer) id")]


async def reload_catalog(request: Request, changed: set[str]) -> None:
    """The catalog right after this process changed the registry (see AppState)."""
    await request.app.state.reload_catalog(changed)


@router.post(
    "",
    summary="Run a spatial query",
    responses={**ANSWERS, **ERRORS},
    description=(
        "A declarative query over one layer: CQL2 filter, time range, spatial predicates against "
        "another layer, a GeoJSON geometry, a digital address or a ward (intersects, within, "
        "contains, within N metres, k nearest), grouping by ward, district, time bucket or attribute "
        "with aggregates, ordering and limits. Distances, areas and lengths are in metres on the "
        "WGS 84 ellipsoid. Anonymous callers may query public layers with tight limits; every role "
        "has a statement timeout and a row cap (`truncated` says when it was reached) — use "
        "`POST /query/jobs` for more. The whole answer must be sent within "
        "IOC_FEATURES_EXPORT_MAX_SECONDS (300 s), or it is cut off without its final chunk."
    ),
)
async def post_query(
    request: Request,
    principal: PrincipalDep,
    catalog: CatalogDep,
    settings: QuerySettingsDep,
    doc: QueryBody,
) -> StreamingResponse:
    """The answer, streamed: a FeatureCollection (with `numberReturned`, `truncated`), CSV or
    a GeoPackage file."""
    seconds = request.app.state.settings.features.export_max_seconds
    deadline = deadline_in(seconds)  # the statement timeout bounds the query, this the answer
    answer = await runner.run_query(request.app.state.pool, catalog, principal, doc, settings)
    headers = {"Cache-Control": "private, no-store"}
    if doc.format != "geojson":
        headers["Content-Disposition"] = f'attachment; filename="{answer.filename}"'
    return TimedStreamingResponse(
        answer.chunks,
        media_type=answer.media_type,
        headers=headers,
        deadline=deadline,
        seconds=seconds,
    )


def _job_links(request: Request, job: dict[str, Any]) -> dict[str, Any]:
    href = f"{base_url(request)}/query/jobs/{job['id']}"
    job["links"] = [{"href": href, "rel": "self", "type": media.JSON, "title": "Công việc / Job"}]
    if job["status"] == "succeeded":
        job["links"].append(
            {
                "href": f"{href}/result",
                "rel": "enclosure",
                "type": runner.MEDIA_TYPES[job["format"]],
                "title": "Kết quả / Result",
            }
        )
    return job


@router.post(
    "/jobs",
    status_code=202,
    summary="Run a query as a background job",
    responses={
        202: {"description": "Accepted: the job's URL is in Location"},
        **ERRORS,
        409: {"description": "Too many queued or running jobs"},
    },
)
async def submit_job(
    request: Request,
    principal: PrincipalDep,
    catalog: CatalogDep,
    settings: QuerySettingsDep,
    doc: QueryBody,
) -> JSONResponse:
    """Checked at once (400/404), then run by the server with the job limits; the job is
    visible to the submitting API key only."""
    job = await jobs.submit(request.app.state.pool, catalog, principal, doc, settings)
    job_runner = getattr(request.app.state, "query_runner", None)
    if job_runner is not None:
        job_runner.wake()
    job = _job_links(request, job)
    return JSONResponse(job, status_code=202, headers={"Location": job["links"][0]["href"]})


@router.get("/jobs", summary="The caller's query jobs")
async def list_jobs(request: Request, principal: PrincipalDep) -> list[dict[str, Any]]:
    """Newest first (the caller's own only)."""
    return [_job_links(request, j) for j in await jobs.list_jobs(request.app.state.pool, principal)]


@router.get(
    "/jobs/{jobId}",
    summary="Status and progress of a job",
    responses={404: {"description": "No such job, or not yours"}},
)
async def get_job(request: Request, principal: PrincipalDep, job_id: JobId) -> dict[str, Any]:
    """`status` (queued, running, succeeded, failed, cancelled), `phase`, `progress` (0–1)."""
    return _job_links(request, await jobs.get_job(request.app.state.pool, principal, job_id))


@router.get(
    "/jobs/{jobId}/result",
    summary="Download a job's result",
    responses={
        **ANSWERS,
        404: {"description": "No such job, or expired"},
        409: {"description": "The job has not succeeded (yet)"},
    },
)
async def job_result(request: Request, principal: PrincipalDep, job_id: JobId) -> FileResponse:
    path, media_type, filename = await jobs.result_file(request.app.state.pool, principal, job_id)
    return FileResponse(
        path,
        media_type=media_type,
        filename=filename,
        headers={"Cache-Control": "private, no-store"},
    )


@router.delete("/jobs/{jobId}", summary="Cancel a job")
async def cancel_job(
    request: Request, principal: PrincipalDep, settings: QuerySettingsDep, job_id: JobId
) -> dict[str, Any]:
    job = await jobs.cancel(request.app.state.pool, principal, job_id, settings.job_keep_hours)
    return _job_links(request, job)


def _saved_links(request: Request, item: dict[str, Any]) -> dict[str, Any]:
    base, layer_id = base_url(request), item["id"]
    item["links"] = [
        {
            "href": f"{base}/query/saved/{layer_id}",
            "rel": "self",
            "type": media.JSON,
            "title": "Truy vấn đã lưu / Saved query",
        },
        {
            "href": f"{base}/collections/{layer_id}",
            "rel": "collection",
            "type": media.JSON,
            "title": "Lớp dẫn xuất / Derived layer",
        },
        {
            "href": f"{base}/collections/{layer_id}/items",
            "rel": "items",
            "type": media.GEOJSON,
            "title": "Đối tượng / Features",
        },
    ]
    return item


@router.post(
    "/saved",
    status_code=201,
    summary="Save a query as a derived layer",
    responses={
        **ERRORS,
        403: {"description": "Not an analyst, publisher or admin"},
        409: {"description": "The id is taken"},
    },
)
async def save_query(
    request: Request,
    principal: PrincipalDep,
    catalog: CatalogDep,
    settings: QuerySettingsDep,
    body: saved.SaveRequest,
) -> JSONResponse:
    """Materialised as `data."<id>"`, registered with origin `derived`: it then has features,
    tiles and a place in the catalog. `every` refreshes it on a schedule (the server's job
    runner); `POST /query/saved/{id}/refresh` on demand."""
    pool = request.app.state.pool
    result = await saved.save(pool, catalog, principal, body, settings)
    await reload_catalog(request, {result["id"]})
    item = _saved_links(
        request,
        await saved_refresh.get_saved(pool, request.app.state.catalog, principal, result["id"]),
    )
    item["truncated"] = result["truncated"]
    return JSONResponse(item, status_code=201, headers={"Location": item["links"][0]["href"]})


@router.get("/saved", summary="Saved queries the caller may read")
async def list_saved(
    request: Request, principal: PrincipalDep, catalog: CatalogDep
) -> list[dict[str, Any]]:
    items = await saved_refresh.list_saved(request.app.state.pool, catalog, principal)
    return [_saved_links(request, item) for item in items]


@router.get(
    "/saved/{savedId}",
    summary="One saved query",
    responses={404: {"description": "Unknown, or not readable"}},
)
async def get_saved(
    request: Request, principal: PrincipalDep, catalog: CatalogDep, saved_id: SavedId
) -> dict[str, Any]:
    return _saved_links(
        request, await saved_refresh.get_saved(request.app.state.pool, catalog, principal, saved_id)
    )


@router.post(
    "/saved/{savedId}/refresh",
    summary="Recompute a derived layer now",
    responses={
        **ERRORS,
        403: {"description": "Not the owner (or an admin)"},
        409: {"description": "A refresh is already running"},
    },
)
async def refresh_saved(
    request: Request,
    principal: PrincipalDep,
    catalog: CatalogDep,
    settings: QuerySettingsDep,
    saved_id: SavedId,
) -> dict[str, Any]:
    """Replaces the rows in one transaction and bumps the layer version (tile caches key on
    it)."""
    pool = request.app.state.pool
    result = await saved_refresh.refresh(pool, catalog, saved_id, settings, principal)
    await reload_catalog(request, {saved_id})
    return result


@router.delete("/saved/{savedId}", status_code=204, summary="Delete a saved query and its layer")
async def delete_saved(
    request: Request, principal: PrincipalDep, catalog: CatalogDep, saved_id: SavedId
) -> None:
    pool = request.app.state.pool
    await saved_refresh.delete(pool, catalog, principal, saved_id)
    await reload_catalog(request, {saved_id})


async def start_runner(app: FastAPI) -> None:
    """Start the query job runner (call in the lifespan, after the pool and catalog exist)."""
    state = app.state
    settings = state.settings.query
    # Layers refreshed on schedule reach the catalog through its watcher (version changes).
    job_runner = jobs.JobRunner(state.pool, settings, get_catalog=lambda: state.catalog)
    job_runner.start()
    state.query_runner = job_runner


async def stop_runner(app: FastAPI) -> None:
    """Stop the runner (before the pool closes); running jobs go back to the queue."""
    job_runner = app.state.query_runner if isinstance(app.state, AppState) else None
    if job_runner is not None:
        await job_runner.stop()
        app.state.query_runner = None
