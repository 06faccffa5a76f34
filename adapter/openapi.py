"""The OpenAPI 3.1 description of the admin API, served at `/admin/api/openapi.json`.

Hand-written so it says what the handlers in `adapter/admin.py` really accept and return;
`tests/adapter/test_admin.py` checks that every path here is served and every served path is here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, description: str, schema: dict[str, Any], where: str = "query") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "description": description, "schema": schema}


_SINCE = _param("since", "Only events received since: a duration (`30m`, `24h`, `7d`), an ISO 8601 time "
                "(UTC unless it says) or epoch milliseconds.", {"type": "string"})
_ERRORS = {"400": _json(_ERROR, "A parameter cannot be used (`invalid_parameter`)."),
           "401": _json(_ERROR, "Missing or wrong bearer token (`unauthorized`).")}

_CONVERSION = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "event_id": {"type": "integer"},
        "kind": {"enum": ["lead", "sale", "refund"]}, "event_name": {"type": "string"},
        "customer_external_id": {"type": ["string", "null"]},
        "idempotency_key": {"type": "string", "description": "The header sent (journey only)."},
        "destination": {"type": ["string", "null"], "description": "The destination of this delivery (`dub`)."},
        "state": {"enum": ["pending", "delivered", "unattributed", "dead", "skipped"]},
        "reason": {"type": ["string", "null"], "description": "`no_click_id`, `no_identifier`, "
                   "`invalid_for_destination`, `customer_not_found`, `click_not_found`, `http_422`, "
                   "`max_attempts`, `duplicate_at_api`, ..."},
        "detail": {"type": ["string", "null"], "description": "The destination rules that mended or refused "
                   "this conversion (`customerName is at most 100 characters (mended)`)."},
        "record": {"type": "object", "description": "The conversion as hooktrack keeps it, destination-neutral "
                   "(journey only)."},
        "reason_text": {"type": ["string", "null"], "description": "The reason in one sentence."},
        "attempts": {"type": "integer"}, "next_attempt_at": {"type": "integer"},
        "delivered_at": {"type": ["integer", "null"]}, "last_status": {"type": ["integer", "null"]},
        "payload": {"type": "object", "description": "The body the destination sends (journey only)."},
        "attempts_log": {"type": "array", "description": "Every delivery attempt (journey only).",
                         "items": {"$ref": "#/components/schemas/Attempt"}},
    },
}
_EVENT = {
    "type": "object",
    "description": "A received webhook. Times are epoch milliseconds (UTC).",
    "properties": {
        "id": {"type": "integer"}, "source": {"type": "string"}, "provider": {"type": "string"},
        "provider_event_id": {"type": ["string", "null"]}, "event_type": {"type": ["string", "null"]},
        "received_at": {"type": "integer"},
        "status": {"enum": ["accepted", "duplicate", "ignored", "rejected"]},
        "reason": {"type": ["string", "null"]},
        "duplicate_of": {"type": ["integer", "null"], "description": "The original event of a redelivery."},
        "conversions": {"type": "array", "items": {"$ref": "#/components/schemas/Conversion"}},
    },
}
_JOURNEY = {
    "allOf": [{"$ref": "#/components/schemas/Event"}, {"type": "object", "properties": {
        "occurred_at": {"type": ["integer", "null"]}, "livemode": {"type": ["boolean", "null"]},
        "body": {"type": ["string", "null"], "description": "The raw body as received; null for rejected "
                 "(unverified) deliveries, which are never stored, and after retention."},
        "reason_text": {"type": ["string", "null"]},
    }}],
}
_ATTEMPT = {
    "type": "object",
    "properties": {
        "attempted_at": {"type": "integer"}, "status_code": {"type": ["integer", "null"]},
        "latency_ms": {"type": "integer"}, "outcome": {"enum": ["delivered", "retry", "dead"]},
        "error": {"type": ["string", "null"]}, "response_excerpt": {"type": ["string", "null"]},
    },
}
_STATS = {
    "type": "object",
    "properties": {
        "generated_at": {"type": "integer"}, "since": {"type": ["integer", "null"]},
        "events": {"type": "object", "description": "Events by status.",
                   "additionalProperties": {"type": "integer"}},
        "sources": {"type": "object", "description": "Per source: events by status, pending and dead conversions.",
                    "additionalProperties": {"type": "object"}},
        "rejected": {"type": "object", "description": "Rejected deliveries by reason.",
                     "additionalProperties": {"type": "integer"}},
        "conversions": {"type": "object", "description": "Conversions by kind, then state.",
                        "additionalProperties": {"type": "object"}},
        "outbox": {"type": "object", "description": "Now, whatever `since` says.", "properties": {
            "pending": {"type": "integer"}, "dead": {"type": "integer"},
            "oldest_pending_age_s": {"type": ["number", "null"]}}},
        "destinations": {"type": "array", "description": "Destinations that were ever paused, and whether "
                         "they are now (`paused_reason` null: sending).", "items": {"type": "object"}},
        "configured_sources": {"type": "object", "description": "Source name → provider.",
                               "additionalProperties": {"type": "string"}},
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "hooktrack admin API", "version": "1",
             "description": "What became of every webhook, and replays of dead-lettered conversions. "
                            "Every path needs `Authorization: Bearer <admin.token>`."},
    "servers": [{"url": "/admin/api"}],
    "security": [{"bearer": []}],
    "paths": {
        "/events": {"get": {
            "summary": "Recent events, newest first, with their conversions",
            "parameters": [
                _param("source", "Only this source.", {"type": "string"}),
                _param("status", "Only this status.", {"enum": ["accepted", "duplicate", "ignored", "rejected"]}),
                _param("state", "Only events with a conversion in this state (`dead`: what needs a replay).",
                       {"enum": ["pending", "delivered", "dead", "skipped"]}),
                _SINCE,
                _param("limit", "At most this many (default 50).", {"type": "integer", "minimum": 1, "maximum": 1000}),
                _param("before", "Only events with a smaller id (the next page).", {"type": "integer"}),
            ],
            "responses": {"200": _json({"type": "object", "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}}, "The events."),
                **_ERRORS},
        }},
        "/events/{event_id}": {"get": {
            "summary": "One event's journey: what arrived, why, what was sent, every attempt",
            "parameters": [_param("event_id", "The event id.", {"type": "integer"}, "path")],
            "responses": {"200": _json({"$ref": "#/components/schemas/Journey"}, "The journey."),
                          "404": _json(_ERROR, "No such event (`not_found`)."), **_ERRORS},
        }},
        "/replay": {"post": {
            "summary": "Put dead-lettered conversions back in the outbox",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                {"type": "object", "required": ["ids"], "properties": {
                    "ids": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 10000}}},
                {"type": "object", "required": ["dead"], "properties": {
                    "dead": {"const": True}, "source": {"type": "string"},
                    "since": {"type": "string", "description": "Only those dead-lettered since (30m, 24h, ISO)."}}},
            ]}}}},
            "responses": {"200": _json({"type": "object", "properties": {
                "requeued": {"type": "array", "items": {"type": "integer"}},
                "not_dead": {"type": "array", "items": {"type": "integer"},
                             "description": "Requested ids that were not dead (left alone)."}}},
                "What moved; the forwarder sends them now."), **_ERRORS},
        }},
        "/stats": {"get": {
            "summary": "Counts per source and status, outbox depth, dead letters, oldest pending age",
            "parameters": [_SINCE],
            "responses": {"200": _json({"$ref": "#/components/schemas/Stats"}, "The counts."), **_ERRORS},
        }},
        "/stats/hourly": {"get": {
            "summary": "Accepted, ignored and failed (rejected + dead) per hour, oldest first",
            "parameters": [
                _param("hours", "How many hours back (default 24).", {"type": "integer", "minimum": 1, "maximum": 336}),
                _param("source", "Only this source.", {"type": "string"}),
            ],
            "responses": {"200": _json({"type": "object", "properties": {"hours": {"type": "array", "items": {
                "type": "object", "properties": {k: {"type": "integer"} for k in (
                    "start", "accepted", "ignored", "duplicate", "rejected", "dead", "failed")}}}}},
                "One row per hour."), **_ERRORS},
        }},
        "/openapi.json": {"get": {"summary": "This description",
                                  "responses": {"200": {"description": "OpenAPI 3.1"}, **_ERRORS}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "The `admin.token` of hooktrack.toml."}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}}}}},
            "Event": _EVENT, "Journey": _JOURNEY, "Conversion": _CONVERSION, "Attempt": _ATTEMPT, "Stats": _STATS,
        },
    },
}
