"""Change events: a Server-Sent Events stream, the same as JSON for polling, and the
AsyncAPI document. Only layers the caller may read, checked per event on the current
catalog: a stream never reveals a hidden layer. A stream that does not resume opens with a ``ready`` message whose
id is the newest event of its readable layers, so a client always has a Last-Event-ID to
resume from. A client that stops reading gets a bounded buffer (IOC_EVENTS_CLIENT_BUFFER
events): past it, one last ``resume`` message names the last event id it was sent, and the
stream ends."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from api.deps import LayerDep, PrincipalDep, StateDep
from api.state import AppState
from api.urls import base_url
from ioc.catalog.access import Principal, can_read
from ioc.errors import InvalidParameter
from ioc.events import asyncapi
from ioc.events.hub import EventHub, Subscriber
from ioc.events.log import ChangeEvent, events_since, newest_of

router = APIRouter(tags=["events"])
log = logging.getLogger("ioc.events")

PING_SECONDS = 15
BACKLOG_PAGE = 500
RESUME_RETRY_MS = 1000  # how soon an EventSource reconnects after the ``resume`` message


def _start(last_event_id: str | None, since: int | None) -> int | None:
    raw = last_event_id if last_event_id is not None else since
    if raw is None:
        return None
    text = str(raw).strip()
    if not text.isdigit():
        raise InvalidParameter("Last-Event-ID must be an event id (a whole number).")
    return int(text)


def _wanted(state: AppState, principal: Principal, layers: str | None) -> set[str] | None:
    """The layer ids asked for (each must be readable: 404 otherwise), None = all readable."""
    if layers is None or not layers.strip():
        return None
    return {state.catalog.get(i.strip(), principal).id for i in layers.split(",") if i.strip()}


async def _visible(state: AppState, principal: Principal, event: ChangeEvent) -> bool:
    # The current catalog (checked for other processes' registry changes, e.g. an access
    # level lowered meanwhile), not the one of the stream's start.
    catalog = await state.current_catalog()
    layer = catalog.find(event.layer)  # a deleted layer is no longer readable: skipped
    return layer is not None and can_read(principal, layer)


def _sse(event: ChangeEvent) -> dict[str, Any]:
    return {"id": str(event.id), "event": "change", "data": json.dumps(event.document())}


def _ready(opening: int) -> dict[str, Any]:
    """The first message of a fresh stream: its id (the newest event of the caller's readable
    layers, not the newest of all: that would tell of hidden layers' writes) becomes the
    browser's Last-Event-ID before any change, so a page that loses the stream resumes."""
    return {"id": str(opening), "event": "ready", "data": json.dumps({"last_event_id": opening})}


def _resume(sent: int, size: int) -> dict[str, Any]:
    """The last message to a client that fell behind. Its id is the last event it was sent, so
    an EventSource reconnects by itself with that Last-Event-ID and loses nothing."""
    reason = (
        f"This client fell more than {size} events behind: reconnect with Last-Event-ID {sent} "
        f"(or ?since={sent}) to read the rest."
    )
    doc = {"last_event_id": sent, "reason": reason}
    return {"id": str(sent), "event": "resume", "retry": RESUME_RETRY_MS, "data": json.dumps(doc)}


async def _stream(
    state: AppState,
    principal: Principal,
    wanted: set[str] | None,
    start: int,
    sub: Subscriber,
    opening: int | None,
) -> AsyncIterator[dict[str, Any]]:
    """The ``ready`` message (unless resuming), the backlog from the database after ``start``,
    then the live events of ``sub``."""
    hub: EventHub = state.events
    sent = start
    try:
        if opening is not None:
            yield _ready(opening)
        while True:  # the backlog from the database
            page = await events_since(state.pool, sent, wanted, BACKLOG_PAGE)
            for event in page:
                sent = event.id
                if await _visible(state, principal, event):
                    yield _sse(event)
            if sub.behind:  # behind while the backlog was read: the next pages have it all
                hub.unsubscribe(sub)
                sub = hub.subscribe()
            elif len(page) < BACKLOG_PAGE:
                break
        while not sub.closed:
            live = await sub.queue.get()
            if live is None:
                break
            if live.id <= sent or (wanted is not None and live.layer not in wanted):
                continue
            sent = live.id
            if await _visible(state, principal, live):
                yield _sse(live)
        if sub.behind:
            log.warning(
                "an event stream fell behind: told where to resume, then closed",
                extra={"last_event_id": sent, "buffer": hub.queue_size},
            )
            yield _resume(sent, hub.queue_size)
    finally:
        hub.unsubscribe(sub)


@router.get(
    "/events",
    summary="Change events (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    request: Request,
    state: StateDep,
    principal: PrincipalDep,
    layers: Annotated[
        str | None, Query(description="Comma-separated layer ids; all readable when absent")
    ] = None,
    since: Annotated[int | None, Query(ge=0, description="Resume after this event id")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """`event: change` per write, `id:` the event id; reconnect with `Last-Event-ID` to get
    what was missed (events are kept for IOC_EVENTS_RETENTION_HOURS). Without one, the stream
    opens with `event: ready`, whose `id:` is where to resume from. A client that falls
    more than IOC_EVENTS_CLIENT_BUFFER events behind gets `event: resume` (its `id:` the last
    event sent) and the stream ends."""
    await state.current_catalog()
    wanted = _wanted(state, principal, layers)
    after = _start(last_event_id, since)
    hub = state.events
    sub = hub.subscribe()  # before the backlog: nothing falls between the two
    start = hub.last_id if after is None else after
    opening = None
    if after is None:  # nothing after it is readable: resuming there loses nothing
        readable = (
            wanted if wanted is not None else {x.id for x in state.catalog.visible(principal)}
        )
        opening = await newest_of(state.pool, readable, start)
    return EventSourceResponse(
        _stream(state, principal, wanted, start, sub, opening),
        ping=PING_SECONDS,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/collections/{collectionId}/changes", summary="Change events of a layer (JSON)")
async def changes(
    request: Request,
    state: StateDep,
    layer: LayerDep,
    since: Annotated[int, Query(ge=0, description="Events after this id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The layer's events after `since`, oldest first; follow `next` until it is absent."""
    found = await events_since(state.pool, since, [layer.id], limit)
    url = f"{base_url(request)}/collections/{layer.id}/changes"
    links = [{"rel": "self", "type": "application/json", "href": f"{url}?since={since}"}]
    if len(found) == limit:
        links.append(
            {
                "rel": "next",
                "type": "application/json",
                "href": f"{url}?since={found[-1].id}&limit={limit}",
            }
        )
    last = found[-1].id if found else since
    return {"changes": [e.document() for e in found], "last": last, "links": links}


@router.get("/asyncapi.json", summary="AsyncAPI 3.0 document of the change events")
async def asyncapi_document(request: Request) -> dict[str, Any]:
    return asyncapi.document(base_url(request))
