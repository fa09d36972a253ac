"""The AsyncAPI 3.0 document of the change stream (``GET /asyncapi.json``)."""

from __future__ import annotations

from typing import Any

PAYLOAD: dict[str, Any] = {
    "type": "object",
    "required": ["id", "layer", "op", "at"],
    "properties": {
        "id": {"type": "integer", "description": "Event id; send it back as Last-Event-ID."},
        "layer": {"type": "string", "description": "Collection (layer) id."},
        "op": {
            "type": "string",
            "description": "item.create, item.replace, item.update, item.delete, "
            "layer.replace, layer.append, layer.restore or layer.delete.",
        },
        "version": {"type": ["integer", "null"], "description": "The layer's new version."},
        "ids": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "Feature ids changed; null for a whole-layer change or a large batch.",
        },
        "count": {"type": "integer", "description": "How many features changed."},
        "bbox": {
            "type": ["array", "null"],
            "items": {"type": "number"},
            "minItems": 4,
            "maxItems": 4,
            "description": "CRS84 extent of the changed features (before and after).",
        },
        "at": {"type": "string", "format": "date-time"},
    },
}
RESUME_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "required": ["last_event_id", "reason"],
    "properties": {
        "last_event_id": {
            "type": "integer",
            "description": "The last event sent (also the message's SSE id): reconnect with it "
            "as Last-Event-ID to read the rest.",
        },
        "reason": {"type": "string", "description": "Why the stream ends, in one sentence."},
    },
}


READY_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "required": ["last_event_id"],
    "properties": {
        "last_event_id": {
            "type": "integer",
            "description": "The newest event of the layers the caller may read (also the "
            "message's SSE id; 0 when none): reconnect with it as Last-Event-ID.",
        },
    },
}


def document(base: str) -> dict[str, Any]:
    """The AsyncAPI document with the server's base URL."""
    host = base.split("://", 1)[-1]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ioc change events",
            "version": "0.1.0",
            "description": "Sự kiện thay đổi dữ liệu — every write to a layer, as Server-Sent "
            "Events (GET /events?layers=a,b; resume with Last-Event-ID) or JSON "
            "(GET /collections/{id}/changes?since=ID). Only layers the caller may read.",
        },
        "servers": {
            "ioc": {
                "host": host,
                "protocol": "https" if base.startswith("https") else "http",
                "pathname": "/events",
            }
        },
        "channels": {
            "changes": {
                "address": "/events",
                "title": "Changes of the layers named in ?layers= (all readable without it)",
                "messages": {
                    "ready": {"$ref": "#/components/messages/ready"},
                    "change": {"$ref": "#/components/messages/change"},
                    "resume": {"$ref": "#/components/messages/resume"},
                },
            }
        },
        "operations": {
            "receiveChanges": {
                "action": "receive",
                "channel": {"$ref": "#/channels/changes"},
                "messages": [
                    {"$ref": "#/channels/changes/messages/ready"},
                    {"$ref": "#/channels/changes/messages/change"},
                    {"$ref": "#/channels/changes/messages/resume"},
                ],
            }
        },
        "components": {
            "messages": {
                "ready": {
                    "name": "ready",
                    "title": "First message of a stream opened without Last-Event-ID or since",
                    "contentType": "application/json",
                    "payload": READY_PAYLOAD,
                },
                "change": {
                    "name": "change",
                    "title": "A layer changed",
                    "contentType": "application/json",
                    "payload": PAYLOAD,
                },
                "resume": {
                    "name": "resume",
                    "title": "The client fell behind; the stream ends after this message",
                    "contentType": "application/json",
                    "payload": RESUME_PAYLOAD,
                },
            }
        },
    }
