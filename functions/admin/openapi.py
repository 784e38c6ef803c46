"""The OpenAPI 3.1 document of the admin API, built from its route table and the campaign model.

Paths and methods come from the router (``campaigns_api.ROUTES``), so the document cannot name
a route that does not exist or miss one that does: each routed endpoint and method must have an
operation below, and building the document fails otherwise. Field names come from
``shared.platforms`` and ``shared.models``; the tests check real answers against the schemas.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import buckets
import qr_codes

from shared.models import (
    ACTIVE,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_PATTERN,
    LISTED_BY_DEFAULT,
    MAX_CAMPAIGN_ID,
    MAX_EXACT_INTEGER,
    MAX_URL_LENGTH,
    READ_ONLY_FIELDS,
    RFC3339_PATTERN,
    STATUSES,
)
from shared.platforms import COUNTER_FIELDS, INACTIVE_FIELD, PLATFORMS

JsonObject = dict[str, Any]

# A loose check that a string starts as an absolute http(s) URL: the server checks the rest,
# and refuses anything this pattern refuses.
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]"


def _ref(name: str) -> JsonObject:
    return {"$ref": f"#/components/schemas/{name}"}


def _counters() -> JsonObject:
    counters: JsonObject = {name: {"type": "integer", "minimum": 0} for name in COUNTER_FIELDS}
    counters[INACTIVE_FIELD]["description"] = _INACTIVE
    return counters


def _url() -> JsonObject:
    return {"type": "string", "maxLength": MAX_URL_LENGTH, "pattern": URL_PATTERN}


def _per_platform(value: JsonObject) -> JsonObject:
    return {"type": "object", "properties": {p: value for p in PLATFORMS}, "additionalProperties": False}


_UNIQUE_VISITORS = {
    "type": "integer", "minimum": 0,
    "description": "Distinct visitors of the bucket's clicks (bots and inactive clicks left out), estimated within "
                   "about 1% (HyperLogLog). A visitor is one client address and User-Agent within one UTC day: keys "
                   "are never linked across UTC days, so one who comes back another UTC day counts again.",
}
_UNIQUE_VISITORS_OF_RANGE = {
    **_UNIQUE_VISITORS,
    "description": "Distinct visitors of the whole range, each counted once however many buckets they "
                   "clicked in: not the sum of the buckets'.",
}
_FORWARD_QUERY = ("Whether a click's query parameters (but `platform`) are added to the destination's, byte for "
                  "byte; the destination's own win a clash. Default false.")
_CANNOT_COUNT = "paused, archived, before `starts_at`, from `ends_at` on, capped, or on a platform it does not target"
_INACTIVE = (f"Clicks the campaign could not count ({_CANNOT_COUNT}); never in `click_count`. The "
             "`<platform>_inactive_click_count` fields split them by platform.")
# Each lifecycle field: its schema when written (null unsets it) and what it means.
_LIFECYCLE: dict[str, tuple[JsonObject, str]] = {
    "status": ({"type": "string", "enum": list(STATUSES)},
               f"Only an `{ACTIVE}` campaign counts clicks. `archived` ones are left out of the list unless its "
               f"`status` asks for them. Default `{ACTIVE}`."),
    "starts_at": ({"type": ["string", "null"], "format": "date-time", "pattern": RFC3339_PATTERN},
                  "RFC 3339, with an offset. Clicks made before it do not count; null: from the start."),
    "ends_at": ({"type": ["string", "null"], "format": "date-time", "pattern": RFC3339_PATTERN},
                "RFC 3339, with an offset, after `starts_at`. Clicks made at or after it do not count; "
                "null: no end."),
    "max_clicks": ({"type": ["integer", "null"], "minimum": 1, "maximum": MAX_EXACT_INTEGER},
                   "A cap on `click_count`: once the counted clicks reach it, clicks do not count. It works from "
                   "the counts as shown, so it may be passed by the clicks of about the `as_of` lag and "
                   "CACHE_TTL_SECONDS. null: no cap."),
    "fallback_url": ({"type": ["string", "null"], "maxLength": MAX_URL_LENGTH, "pattern": URL_PATTERN},
                     f"Where clicks that cannot count go ({_CANNOT_COUNT}); null: the global FALLBACK_URL."),
}


def _schemas() -> JsonObject:
    timestamp = {"type": "string", "format": "date-time"}
    campaign_fields = {
        "id": {"type": "integer", "minimum": 1, "maximum": MAX_CAMPAIGN_ID},
        "redirect_url": {"type": "string"},
        "created_at": timestamp,
        "updated_at": timestamp,
        "platforms": {"type": "array", "items": _ref("Platform")},
        "platform_urls": _per_platform({"type": "string"}),
        "forward_query": {"type": "boolean"},
        **{name: {"type": schema["type"], **({"format": "date-time"} if "format" in schema else {}),
                  "description": text}
           for name, (schema, text) in _LIFECYCLE.items()},
        **_counters(),
        "as_of": {"type": ["string", "null"], "format": "date-time",
                  "description": "Clicks up to this time are folded into the counters shown; null: none yet."},
        "tracking_links": _per_platform({"type": "string", "format": "uri"}),
    }
    writable = {
        "redirect_url": _url(),
        "platforms": {"type": "array", "minItems": 1, "items": _ref("Platform")},
        "platform_urls": _per_platform(_url()),
        "forward_query": {"type": "boolean", "description": _FORWARD_QUERY},
        **{name: {**schema, "description": text} for name, (schema, text) in _LIFECYCLE.items()},
    }
    ignored = {name: {"description": "Read-only: ignored, so that what was read can be sent back."}
               for name in sorted(READ_ONLY_FIELDS)}
    bucket = {"start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"}}
    return {
        "Platform": {"type": "string", "enum": list(PLATFORMS)},
        "Campaign": {"type": "object", "properties": campaign_fields, "required": list(campaign_fields),
                     "additionalProperties": False},
        "NewCampaign": {"type": "object", "properties": {**writable, **ignored},
                        "required": ["redirect_url", "platforms"], "additionalProperties": False},
        "CampaignChanges": {"type": "object", "properties": {**writable, **ignored},
                            "anyOf": [{"required": [name]} for name in writable], "additionalProperties": False},
        "CampaignPage": {
            "type": "object",
            "properties": {"campaigns": {"type": "array", "items": _ref("Campaign")},
                           "next": {"type": ["string", "null"], "description": "The cursor of the next page."}},
            "required": ["campaigns", "next"], "additionalProperties": False,
        },
        "Totals": {"type": "object", "properties": {**_counters(), "unique_visitors": _UNIQUE_VISITORS_OF_RANGE},
                   "required": [*COUNTER_FIELDS, "unique_visitors"], "additionalProperties": False},
        "Bucket": {"type": "object", "properties": {**bucket, **_counters(), "unique_visitors": _UNIQUE_VISITORS},
                   "required": [*bucket, *COUNTER_FIELDS, "unique_visitors"], "additionalProperties": False},
        "Stats": {
            "type": "object",
            "properties": {
                "campaign_id": {"type": "integer"},
                "granularity": {"type": "string", "enum": list(buckets.GRANULARITIES)},
                "tz": {"type": "string"},
                "from": {"type": "string", "format": "date-time"},
                "to": {"type": "string", "format": "date-time"},
                "as_of": {"type": ["string", "null"], "format": "date-time"},
                "buckets": {"type": "array", "items": _ref("Bucket")},
                "totals": _ref("Totals"),
            },
            "required": ["campaign_id", "granularity", "tz", "from", "to", "as_of", "buckets", "totals"],
            "additionalProperties": False,
        },
        "Error": {"type": "object", "properties": {"status": {"const": "error"}, "msg": {"type": "string"}},
                  "required": ["status", "msg"], "additionalProperties": False},
    }


def _error(description: str, headers: JsonObject | None = None) -> JsonObject:
    answer: JsonObject = {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}
    if headers:
        answer["headers"] = headers
    return answer


_RETRY_AFTER = {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
_ERRORS: JsonObject = {
    "400": _error("Bad input: the message says what is wrong. Nothing was written."),
    "401": _error("Missing or wrong credentials.", {"WWW-Authenticate": {"schema": {"type": "string"}}}),
    "403": _error("A browser sent this change for a page of another site or origin (its Sec-Fetch-Site is "
                  "not same-origin or none, or its Origin is not the admin's): only the admin's own pages may "
                  "change anything. Decided before the credentials are checked."),
    "404": _error("No such campaign (or file)."),
    "412": _error("If-Match names no current version of the campaign: it was changed (or deleted and made "
                  "again) since it was read. Nothing was written; read it again, then make the change."),
    "413": _error("The body is larger than MAX_BODY_BYTES, whether it has a Content-Length or is chunked."),
    "415": _error("The body is not declared `Content-Type: application/json` (UTF-8); a DELETE may declare "
                  "nothing else."),
    "422": _error("This Idempotency-Key already created a campaign from another body. Nothing was written."),
    "429": _error("Too many failed logins from this client; even right credentials wait until Retry-After.",
                  {"Retry-After": _RETRY_AFTER}),
    "503": _error("The campaign kept changing while a conditional write was tried (one with If-Match, or one "
                  "changing a single date, checked against the other as stored), its counters being updated in "
                  "a long burst; nothing was written. Try again after Retry-After.",
                  {"Retry-After": _RETRY_AFTER}),
}


def _errors(*statuses: str) -> JsonObject:
    """The operation's own errors, plus those of basic auth that every operation may answer."""
    return {status: _ERRORS[status] for status in ("401", "429", *statuses)}


def _query(name: str, schema: JsonObject, description: str, **extra: Any) -> JsonObject:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description, **extra}


_ID = {"name": "id", "in": "path", "required": True, "description": "The campaign's id.",
       "schema": {"type": "integer", "minimum": 1, "maximum": MAX_CAMPAIGN_ID}}
_ETAG = {"ETag": {"required": True, "schema": {"type": "string"},
                  "description": "The campaign's version, then a digest of this answer (which changes as clicks "
                                 "are counted): for If-None-Match, and for If-Match on PUT and DELETE, which "
                                 "compares the version alone."}}


def _header(name: str, schema: JsonObject, description: str) -> JsonObject:
    return {"name": name, "in": "header", "required": False, "schema": schema, "description": description}


_IF_MATCH = _header("If-Match", {"type": "string"},
                    "The ETag of the campaign as read: the change is made only if the campaign's version is still "
                    "that one (counted clicks do not count as a change), else 412.")
_IDEMPOTENCY_KEY = _header(
    IDEMPOTENCY_KEY, {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
    "Makes the create safe to retry: for 24 hours, the same key with the same JSON body answers 201 with the "
    "campaign it created first (as it is now) and creates nothing; with another body, 422. Concurrent requests "
    "with one key create one campaign.")
_FORMAT = _query("format", {"type": "string", "enum": ["json", "csv"]},
                 "json or csv; without it, an `Accept: text/csv` header asks for CSV.")
_CSV = {"text/csv": {"schema": {"type": "string"}}}
_DISPOSITION = {"Content-Disposition": {"description": "The CSV's file name (CSV answers only).",
                                        "schema": {"type": "string"}}}


def _json(schema: JsonObject) -> JsonObject:
    return {"application/json": {"schema": schema}}


def _qr(kind: str) -> JsonObject:
    return {"GET": {
        "summary": f"The QR code of a tracking link, as {kind.upper()}",
        "description": "The link of `platform`, as the campaign's `tracking_links` show it; without `platform`, "
                       "the link without it, whose platform the track function tells by the User-Agent.",
        "parameters": [
            _ID,
            _query("platform", _ref("Platform"), "One of the campaign's platforms."),
            _query("scale", {"type": "integer", "minimum": qr_codes.MIN_SCALE, "maximum": qr_codes.MAX_SCALE},
                   f"Pixels (SVG: user units) per module. Default: {qr_codes.DEFAULT_SCALE}."),
        ],
        "responses": {
            "200": {
                "description": "The code, dark on white, with a quiet zone of 4 modules.",
                "headers": {
                    "Cache-Control": {"schema": {"type": "string"}, "example": "private, max-age=3600"},
                    "Content-Disposition": {"description": "The file's name, to save it under.",
                                            "schema": {"type": "string"}},
                },
                "content": {qr_codes.CONTENT_TYPES[kind]: {"schema": {"type": "string"}}},
            },
            **_errors("400", "404"),
        },
    }}


def _operations() -> dict[str, dict[str, JsonObject]]:
    """Every endpoint's operations by method, keyed as the router names them."""
    campaign_answer = {"description": "The campaign.", "headers": _ETAG, "content": _json(_ref("Campaign"))}
    _moment = {"type": "string", "pattern": buckets.MOMENT_PATTERN}
    return {
        "dashboard": {"GET": {
            "summary": "The dashboard page",
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                          **_errors("404")},
        }},
        "static": {"GET": {
            "summary": "A static file of the dashboard",
            "parameters": [{"name": "file", "in": "path", "required": True, "schema": {"type": "string"},
                            "example": "index.html"}],
            "responses": {"200": {"description": "The file.", "content": {"*/*": {"schema": {}}}},
                          **_errors("404")},
        }},
        "openapi": {"GET": {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})},
                          **_errors()},
        }},
        "campaigns": {
            "GET": {
                "summary": "List campaigns, newest first",
                "description": "Without `limit`, every campaign as an array (the original shape). With it, one "
                               "page and the cursor of the next, also in a `Link: <...>; rel=\"next\"` header.",
                "parameters": [
                    _query("platforms", {"type": "array", "minItems": 1, "items": _ref("Platform")},
                           "Keep campaigns that target every listed platform, e.g. Android,IPhone.",
                           style="form", explode=False),
                    _query("status", {"type": "array", "minItems": 1,
                                      "items": {"type": "string", "enum": list(STATUSES)}},
                           "Keep campaigns with one of these statuses, e.g. archived. Default: "
                           f"{','.join(LISTED_BY_DEFAULT)} (archived campaigns are left out).",
                           style="form", explode=False),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size."),
                    _query("cursor", {"type": "string"}, "The `next` of the previous page (needs `limit`)."),
                    _FORMAT,
                ],
                "responses": {
                    "200": {
                        "description": "Campaigns: an array without `limit`, a page with it; or CSV.",
                        "headers": {"Link": {"description": "The next page, when there is one.",
                                             "schema": {"type": "string"}}, **_DISPOSITION},
                        "content": {**_json({"oneOf": [{"type": "array", "items": _ref("Campaign")},
                                                       _ref("CampaignPage")]}), **_CSV},
                    },
                    **_errors("400"),
                },
            },
            "POST": {
                "summary": "Create a campaign",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {"required": True, "content": _json(_ref("NewCampaign"))},
                "responses": {
                    "201": {**campaign_answer, "headers": {
                        **_ETAG, "Location": {"required": True, "schema": {"type": "string"}}}},
                    **_errors("400", "403", "413", "415", "422"),
                    "404": _error("The campaign this Idempotency-Key created has since been deleted."),
                },
            },
        },
        "campaign": {
            "GET": {"summary": "Read a campaign",
                    "parameters": [_ID, _header("If-None-Match", {"type": "string"},
                                                "ETags of answers already held: 304 when one is the answer now.")],
                    "responses": {"200": campaign_answer,
                                  "304": {"description": "Not modified: the answer would be the one with this ETag.",
                                          "headers": _ETAG},
                                  **_errors("404")}},
            "PUT": {"summary": "Change any of a campaign's writable fields, such as its status, dates, cap or "
                               "fallback (never its counters)",
                    "description": "Fields left out stay as they are; null unsets `starts_at`, `ends_at`, "
                                   "`max_clicks` or `fallback_url`. Track instances follow within CACHE_TTL_SECONDS.",
                    "parameters": [_ID, _IF_MATCH],
                    "requestBody": {"required": True, "content": _json(_ref("CampaignChanges"))},
                    "responses": {"200": campaign_answer,
                                  **_errors("400", "403", "404", "412", "413", "415", "503")}},
            "DELETE": {"summary": "Delete a campaign (its counters are removed later)", "parameters": [_ID, _IF_MATCH],
                       "responses": {"204": {"description": "Deleted."},
                                     **_errors("403", "404", "412", "415", "503")}},
        },
        "stats": {"GET": {
            "summary": "A campaign's clicks per hour or per day",
            "description": "Every bucket of `[from, to)` (widened to whole buckets), oldest first, zeros "
                           f"included; at most {buckets.MAX_BUCKETS[buckets.HOUR]} hours or "
                           f"{buckets.MAX_BUCKETS[buckets.DAY]} days. Days run from midnight to midnight in "
                           "`tz`, so some have 23 or 25 hours.",
            "parameters": [
                _ID,
                _query("from", _moment, "ISO 8601 date or date-time; without an offset, in `tz`. "
                       f"Default: {buckets.DEFAULT_DAYS} days before `to`.", example="2026-03-29"),
                _query("to", _moment, "ISO 8601 date or date-time, exclusive. Default: now.",
                       example="2026-03-30T00:00:00+02:00"),
                _query("granularity", {"type": "string", "enum": list(buckets.GRANULARITIES)},
                       f"Default: {buckets.DEFAULT_GRANULARITY}."),
                _query("tz", {"type": "string", "pattern": buckets.TZ_PATTERN},
                       f"An IANA time zone. Default: {buckets.DEFAULT_TZ}.", example="Europe/Ljubljana"),
                _FORMAT,
            ],
            "responses": {
                "200": {"description": "The series and its totals; or CSV, one row per bucket, each also "
                                       "carrying the range's `range_unique_visitors`.",
                        "headers": _DISPOSITION, "content": {**_json(_ref("Stats")), **_CSV}},
                **_errors("400", "404"),
            },
        }},
        **{f"qr_{kind}": _qr(kind) for kind in qr_codes.CONTENT_TYPES},
    }


@cache
def query_parameters(endpoint: str, method: str) -> frozenset[str]:
    """The query parameters an operation takes: the router refuses any other, as the body refuses unknown fields."""
    operation = _operations()[endpoint]["GET" if method == "HEAD" else method]
    return frozenset(p["name"] for p in operation.get("parameters", ()) if p["in"] == "query")


def _head(get: JsonObject) -> JsonObject:
    """HEAD answers GET's status and headers without a body."""
    head = copy.deepcopy(get)
    head["summary"] = "Headers of: " + get["summary"]
    for answer in head["responses"].values():
        answer.pop("content", None)
    return head


Route = tuple[str, str, str]  # OpenAPI path, method, endpoint


@cache
def document(server: str, routes: tuple[Route, ...], alias: tuple[str, str]) -> JsonObject:
    """The whole document for the router's ``routes``, relative to ``server`` (the mount a request came in by).

    ``alias`` is (old, new) spelling of a path segment: the old one's operations are marked deprecated.
    """
    operations = _operations()
    paths: dict[str, JsonObject] = {}
    for path, method, endpoint in routes:
        known = operations.get(endpoint, {})
        operation = _head(known["GET"]) if method == "HEAD" and "GET" in known else copy.deepcopy(known.get(method))
        if operation is None:
            raise LookupError(f"no OpenAPI operation for {method} {path} (endpoint {endpoint})")
        words = [word.strip("{}") for word in path.split("/") if word]
        operation["operationId"] = "_".join([method.lower(), *words]) if words else f"{method.lower()}_dashboard"
        old, new = alias
        if old in words:
            operation["deprecated"] = True
            operation["description"] = f"The original o7tracker's spelling of {path.replace(old, new)}."
        paths.setdefault(path, {})[method.lower()] = operation
    routed = {(endpoint, method) for _, method, endpoint in routes}
    unrouted = [(e, m) for e, methods in operations.items() for m in methods if (e, m) not in routed]
    if unrouted:
        raise LookupError(f"OpenAPI operations without a route: {unrouted}")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "o7tracker admin API",
            "version": "1",
            "description": "Campaigns, their click counts and stats. Every answer is JSON (or CSV when "
                           "asked for); every error is {\"status\": \"error\", \"msg\": ...}. A body is "
                           "`application/json`; a browser may change something only for the admin's own pages "
                           "(see 403).",
        },
        "servers": [{"url": server}],
        "security": [{"basicAuth": []}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
        },
    }
