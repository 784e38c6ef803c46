"""The admin API: campaigns, their stats, the dashboard and the API's description, behind basic auth.

Routes are werkzeug rules under a mount point: ``/admin`` in the one-port layout of ``./run.sh``,
or nothing when the deployed function is called on its own URL. The route table is also the
source of the OpenAPI document's paths (see ``openapi.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import browser
import buckets
import flask
import openapi
import qr_codes
from google.cloud import firestore
from werkzeug import exceptions as wexc
from werkzeug.routing import Map, Rule
from werkzeug.security import safe_join

from shared.clients import Lazy
from shared.config import AUTH_PASSWORD, ConfigError, Settings
from shared.errors import BadRequest, MethodNotAllowed, NotFound
from shared.http import csv_response, empty_response, json_array_response, json_response, read_json
from shared.ids import keyed_ids
from shared.login_limiter import LoginLimiter, login_limiter
from shared.models import (
    IDEMPOTENCY_KEY,
    LISTED_BY_DEFAULT,
    STATUSES,
    Campaign,
    check_track_base_url,
    parse_campaign_fields,
    parse_campaign_id,
    rfc3339,
    validate_idempotency_key,
)
from shared.platforms import COUNTER_FIELDS, PLATFORMS, is_platform
from shared.store import CampaignStore, Idempotency

MOUNT = "/admin"
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_PAGE_SIZE = 1000
CSV = "text/csv"
JSON = "application/json"
FORMATS = {"json": JSON, "csv": CSV}

# The original README spells the path "campains"; both spellings are served.
SPELLINGS = ("campaigns", "campains")
ALIAS = (SPELLINGS[1], SPELLINGS[0])
ROUTES = Map(
    [
        Rule("/", endpoint="dashboard", methods=["GET"]),
        Rule("/static/<path:file>", endpoint="static", methods=["GET"]),
        Rule("/openapi.json", endpoint="openapi", methods=["GET"]),
        *[rule for spelling in SPELLINGS for rule in (
            Rule(f"/{spelling}", endpoint="campaigns", methods=["GET", "POST"]),
            Rule(f"/{spelling}/<id>", endpoint="campaign", methods=["GET", "PUT", "DELETE"]),
            Rule(f"/{spelling}/<id>/stats", endpoint="stats", methods=["GET"]),
            *[Rule(f"/{spelling}/<id>/qr.{kind}", endpoint=f"qr_{kind}", methods=["GET"])
              for kind in qr_codes.CONTENT_TYPES],
        )],
    ],
    strict_slashes=False,  # a trailing slash names the same resource, as it always has
    merge_slashes=False,
    redirect_defaults=False,
)

LIFECYCLE_FIELDS = ("status", "starts_at", "ends_at", "max_clicks", "fallback_url")
CAMPAIGN_CSV_HEADER = (
    "id", "redirect_url", "platforms", "created_at", "updated_at", "as_of", *COUNTER_FIELDS,
    *[f"{p.lower()}_url" for p in PLATFORMS], *[f"{p.lower()}_tracking_link" for p in PLATFORMS], "forward_query",
    *LIFECYCLE_FIELDS,
)
UNIQUE_VISITORS = "unique_visitors"
# A range's distinct visitors are not the sum of its buckets': each row carries the range's too.
RANGE_UNIQUE_VISITORS = "range_unique_visitors"
STATS_CSV_HEADER = ("start", "end", *COUNTER_FIELDS, UNIQUE_VISITORS, RANGE_UNIQUE_VISITORS)

# The AdminApi method answering each routed endpoint and method (HEAD is answered as GET).
VIEWS = {
    ("dashboard", "GET"): "dashboard",
    ("static", "GET"): "static",
    ("openapi", "GET"): "openapi",
    ("campaigns", "GET"): "list_campaigns",
    ("campaigns", "POST"): "create_campaign",
    ("campaign", "GET"): "get_campaign",
    ("campaign", "PUT"): "update_campaign",
    ("campaign", "DELETE"): "delete_campaign",
    ("stats", "GET"): "stats",
    ("qr_svg", "GET"): "qr_svg",
    ("qr_png", "GET"): "qr_png",
}
# A code changes only with TRACK_BASE_URL: an hour spares the dashboard redrawing it, and a new
# base shows soon. Private: it is answered behind basic auth.
QR_CACHE_CONTROL = "private, max-age=3600"


@dataclass(frozen=True)
class Call:
    """One routed request: the request, the mount it came through, and the rule's arguments."""

    request: flask.Request
    mount: str
    args: Mapping[str, Any]


class AdminApi:
    def __init__(self, store: Lazy[CampaignStore], auth_user: str, auth_password: str, max_body_bytes: int,
                 track_base_url: str | None, logins: LoginLimiter) -> None:
        if not auth_password:
            raise ConfigError(f"{AUTH_PASSWORD} is empty; the admin API never runs open")
        self._store = store
        self.logins = logins
        self.auth_user = auth_user
        self.auth_password = auth_password
        self.max_body_bytes = max_body_bytes
        self.track_base_url = track_base_url.rstrip("/") if track_base_url else None

    @property
    def store(self) -> CampaignStore:
        return self._store.get()

    def handle(self, request: flask.Request) -> flask.Response:
        # A state change another site's page asked for is refused whatever credentials it carries.
        browser.refuse_other_origins(request)
        self.logins.require_basic_auth(request, self.auth_user, self.auth_password)
        if request.path == MOUNT:
            # The dashboard's relative links resolve against /admin/, not /admin.
            query = request.query_string.decode("latin-1")
            return empty_response(308, {"Location": f"{MOUNT}/" + (f"?{query}" if query else "")})
        mount, path = split_mount(request.path)
        try:
            endpoint, args = ROUTES.bind("", script_name=mount or None).match(path, request.method)
        except wexc.MethodNotAllowed as exc:
            allowed = exc.valid_methods or ()
            raise MethodNotAllowed(f"{request.method} not allowed here; use {', '.join(sorted(allowed))}",
                                   allowed) from None
        except wexc.NotFound:
            raise NotFound(f"no such endpoint: {request.path}") from None
        # werkzeug routes HEAD to GET rules; the server then sends the GET answer's headers alone.
        method = "GET" if request.method == "HEAD" else request.method
        browser.require_json(request)
        check_query(request, openapi.query_parameters(endpoint, method))
        view: Callable[[Call], flask.Response] = getattr(self, VIEWS[endpoint, method])
        return view(Call(request, mount, args))

    # -- the dashboard and the description ---------------------------------------------------

    def dashboard(self, call: Call) -> flask.Response:
        return self._static_file("index.html")

    def static(self, call: Call) -> flask.Response:
        return self._static_file(call.args["file"])

    def _static_file(self, name: str) -> flask.Response:
        path = safe_join(str(STATIC_DIR), name)
        try:
            found = path is not None and Path(path).is_file()
        except OSError:  # a name the file system refuses outright (too long, say) names no file
            found = False
        if path is None or not found:
            raise NotFound(f"no such file: {name}")
        response = flask.send_file(path, conditional=True)
        response.headers["Cache-Control"] = "no-cache"  # behind auth; revalidated by ETag
        # werkzeug's conditional answer sets a Date of its own, and the server (uvicorn, gunicorn)
        # always adds one: the answer would carry two.
        response.headers.pop("Date", None)
        return response

    def openapi(self, call: Call) -> flask.Response:
        return json_response(openapi.document(call.mount or "/", tuple(routed_operations()), ALIAS))

    # -- campaigns -----------------------------------------------------------------------------

    def list_campaigns(self, call: Call) -> flask.Response:
        request = call.request
        platforms = platforms_filter(request.args.get("platforms"))
        statuses = statuses_filter(request.args.get("status"))
        limit = whole_number(request.args, "limit", 1, MAX_PAGE_SIZE)
        cursor = request.args.get("cursor") or None
        if cursor is not None and limit is None:
            raise BadRequest("'cursor' needs 'limit'; send the 'next' link of the previous page")
        as_csv = wants_csv(request)
        if limit is None:
            return self._every_campaign(request, platforms, statuses, as_csv)
        page = self.store.list_page(platforms, limit, cursor, statuses)
        campaigns = [self.campaign_json(c, request) for c in page.campaigns]
        headers = {}
        if page.next_cursor is not None:
            headers["Link"] = f'<{next_page_url(request, page.next_cursor)}>; rel="next"'
        if as_csv:
            return csv_response("campaigns.csv", CAMPAIGN_CSV_HEADER, map(campaign_row, campaigns), headers)
        return json_response({"campaigns": campaigns, "next": page.next_cursor}, headers=headers)

    def _every_campaign(
        self, request: flask.Request, platforms: list[str], statuses: tuple[str, ...], as_csv: bool
    ) -> flask.Response:
        """The whole list, written as Firestore sends it (see ``streamed_response``)."""
        campaigns = (self.campaign_json(c, request) for c in self.store.stream(platforms, statuses))
        if as_csv:
            return csv_response("campaigns.csv", CAMPAIGN_CSV_HEADER, map(campaign_row, campaigns))
        return json_array_response(campaigns)

    def create_campaign(self, call: Call) -> flask.Response:
        key = validate_idempotency_key(call.request.headers.get(IDEMPOTENCY_KEY))
        body = read_json(call.request, self.max_body_bytes)
        values = parse_campaign_fields(body, partial=False)
        campaign = self.store.create(values, Idempotency.of(self.auth_user, key, body) if key is not None else None)
        location = f"{call.mount}/campaigns/{campaign.id}"
        return self.campaign_answer(campaign, call.request, 201, {"Location": location})

    def get_campaign(self, call: Call) -> flask.Response:
        answer = self.campaign_answer(self.store.get(campaign_id(call)), call.request)
        etag, _ = answer.get_etag()
        if etag is not None and call.request.if_none_match.contains_weak(etag):
            return empty_response(304, {"ETag": answer.headers["ETag"], "Cache-Control": "no-store"})
        return answer

    def update_campaign(self, call: Call) -> flask.Response:
        target = campaign_id(call)
        values = parse_campaign_fields(read_json(call.request, self.max_body_bytes), partial=True)
        return self.campaign_answer(self.store.update(target, values, if_match(call.request)), call.request)

    def delete_campaign(self, call: Call) -> flask.Response:
        self.store.delete(campaign_id(call), if_match(call.request))
        return empty_response(204)

    def stats(self, call: Call) -> flask.Response:
        target = campaign_id(call)
        stats_range = buckets.parse_range(call.request.args, datetime.now(timezone.utc))
        as_csv = wants_csv(call.request)
        # Read before the buckets, so the answer holds at least every click folded before as_of.
        as_of = self.store.as_of()
        hourly = self.store.hourly(target, stats_range.start, stats_range.end)
        series = buckets.fold(stats_range, hourly.counts)
        visitors, range_visitors = buckets.fold_visitors(
            stats_range, {hour: sketches.values() for hour, sketches in hourly.visitors.items()})
        rows = [
            {"start": stats_range.local(b.start).isoformat(), "end": stats_range.local(b.end).isoformat(), **c,
             UNIQUE_VISITORS: v}
            for b, c, v in zip(stats_range.buckets, series, visitors, strict=True)
        ]
        if as_csv:
            filename = f"campaign-{target}-stats-{stats_range.granularity}.csv"
            return csv_response(filename, STATS_CSV_HEADER, (
                [*(row[k] for k in STATS_CSV_HEADER[:-1]), range_visitors] for row in rows))
        return json_response({
            "campaign_id": target,
            "granularity": stats_range.granularity,
            "tz": stats_range.tz_name,
            "from": stats_range.local(stats_range.start).isoformat(),
            "to": stats_range.local(stats_range.end).isoformat(),
            "as_of": rfc3339(as_of) if as_of else None,
            "buckets": rows,
            "totals": {**buckets.total(series), UNIQUE_VISITORS: range_visitors},
        })

    def qr_svg(self, call: Call) -> flask.Response:
        return self._qr(call, "svg")

    def qr_png(self, call: Call) -> flask.Response:
        return self._qr(call, "png")

    def _qr(self, call: Call, kind: str) -> flask.Response:
        """The QR code of a tracking link: the platform's, or without ``platform`` the one whose platform the
        track function tells by the phone's User-Agent."""
        args = call.request.args
        scale = whole_number(args, "scale", qr_codes.MIN_SCALE, qr_codes.MAX_SCALE) or qr_codes.DEFAULT_SCALE
        campaign = self.store.get(campaign_id(call))
        platform = args.get("platform")
        if platform is not None and platform not in campaign.platforms:
            raise BadRequest(f"'platform' must be one of this campaign's platforms ({', '.join(campaign.platforms)}), "
                             f"got {platform[:64]!r}")
        name = f"campaign-{campaign.id}-{platform.lower() if platform else 'any'}-qr.{kind}"
        return flask.Response(
            qr_codes.qr_code(self.tracking_link(campaign.id, platform, call.request), kind, scale),
            mimetype=qr_codes.CONTENT_TYPES[kind],
            headers={"Cache-Control": QR_CACHE_CONTROL, "Content-Disposition": f'inline; filename="{name}"'},
        )

    def campaign_answer(self, campaign: Campaign, request: flask.Request, status: int = 200,
                        headers: dict[str, str] | None = None) -> flask.Response:
        """The campaign as JSON, with an ETag of its version and a digest of the whole answer.

        The digest makes the tag change whenever the answer does, counters
        included, for ``If-None-Match``; ``If-Match`` compares the version alone
        (:func:`if_match`), so counting clicks never makes an edit stale.
        """
        answer = json_response(self.campaign_json(campaign, request), status, headers)
        answer.set_etag(f"{campaign.version}.{hashlib.sha256(answer.get_data()).hexdigest()[:16]}")
        return answer

    def campaign_json(self, campaign: Campaign, request: flask.Request) -> dict[str, Any]:
        """The stored campaign as shown, with a tracking link per targeted platform."""
        return {
            **campaign.to_json(),
            "tracking_links": {p: self.tracking_link(campaign.id, p, request) for p in campaign.platforms},
        }

    def tracking_link(self, campaign_id: int, platform: str | None, request: flask.Request) -> str:
        """``TRACK_BASE_URL/<id>?platform=<P>``; the base defaults to this request's origin + ``/track``."""
        base = self.track_base_url or request.host_url.rstrip("/") + "/track"
        return f"{base}/{campaign_id}?platform={platform}" if platform else f"{base}/{campaign_id}"


def split_mount(path: str) -> tuple[str, str]:
    """``/admin/campaigns`` as ``("/admin", "/campaigns")``; a path outside the mount as ``("", path)``."""
    if path == MOUNT or path.startswith(MOUNT + "/"):
        return MOUNT, path[len(MOUNT):] or "/"
    return "", path or "/"


def check_query(request: flask.Request, known: frozenset[str]) -> None:
    """Unknown query parameters are refused: ``?platform=Android`` must not quietly list everything."""
    unknown = sorted({name[:64] for name in request.args} - known)
    if unknown:
        takes = f"; this endpoint takes {', '.join(sorted(known))}" if known else "; this endpoint takes none"
        raise BadRequest(f"unknown query parameter(s): {', '.join(map(repr, unknown))}{takes}")


def campaign_id(call: Call) -> int:
    raw = call.args["id"]
    parsed = parse_campaign_id(raw)
    if parsed is None:
        raise NotFound(f"campaign {raw[:64]} not found")
    return parsed


def if_match(request: flask.Request) -> frozenset[str] | None:
    """The campaign versions an ``If-Match`` accepts; None without one, or with ``*`` (any campaign that exists).

    Each tag's version part is compared, not the digest of the answer it came
    with, which changes as clicks are counted. Weak tags never match: If-Match
    compares strongly. An empty tag (``""``), which werkzeug reads as None, names nothing.
    """
    if "If-Match" not in request.headers or request.if_match.star_tag:
        return None
    return frozenset(tag.partition(".")[0] for tag in request.if_match.as_set() if tag)


def platforms_filter(raw: str | None) -> list[str]:
    """``Android,IPhone`` as a list; an unknown or empty name is an error, not an empty result."""
    if raw is None:
        return []
    names = [name.strip() for name in raw.split(",")]
    unknown = [name for name in names if not is_platform(name)]
    if unknown:
        raise BadRequest(f"unsupported platform(s) {unknown!r} in 'platforms'; supported: {list(PLATFORMS)}")
    return list(dict.fromkeys(names))


def statuses_filter(raw: str | None) -> tuple[str, ...]:
    """``paused,archived`` as a tuple; without it, every campaign but the archived ones."""
    if raw is None:
        return LISTED_BY_DEFAULT
    names = [name.strip() for name in raw.split(",")]
    unknown = [name for name in names if name not in STATUSES]
    if unknown:
        raise BadRequest(f"unknown status(es) {unknown!r} in 'status'; known: {list(STATUSES)}")
    return tuple(dict.fromkeys(names))


def whole_number(args: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """The query parameter ``name`` as a whole number from ``low`` to ``high``; None when it is absent."""
    raw = args.get(name)
    if raw is None:
        return None
    # The length first: int() refuses more than 4,300 digits, which would answer 500, not 400.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(high)) and low <= int(raw) <= high):
        raise BadRequest(f"'{name}' must be a whole number from {low} to {high}, got {raw[:64]!r}")
    return int(raw)


def wants_csv(request: flask.Request) -> bool:
    """``?format=csv`` or ``?format=json`` decides; without it, ``Accept`` does (JSON unless CSV is preferred)."""
    chosen = request.args.get("format")
    if chosen is not None:
        if chosen not in FORMATS:
            raise BadRequest(f"'format' must be one of {', '.join(FORMATS)}, got {chosen[:64]!r}")
        return chosen == "csv"
    return request.accept_mimetypes.best_match([JSON, CSV]) == CSV


def next_page_url(request: flask.Request, cursor: str) -> str:
    """This request's own URL (path relative to the host) asking for the page after ``cursor``."""
    query = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"] + [("cursor", cursor)]
    return f"{quote(request.path)}?{urlencode(query)}"


def campaign_row(campaign: dict[str, Any]) -> list[Any]:
    return [
        campaign["id"], campaign["redirect_url"], ",".join(campaign["platforms"]),
        campaign["created_at"], campaign["updated_at"], campaign["as_of"] or "",
        *[campaign[name] for name in COUNTER_FIELDS],
        *[campaign["platform_urls"].get(p, "") for p in PLATFORMS],
        *[campaign["tracking_links"].get(p, "") for p in PLATFORMS],
        "true" if campaign["forward_query"] else "false",
        *["" if campaign[name] is None else campaign[name] for name in LIFECYCLE_FIELDS],
    ]


def routed_operations() -> Iterable[tuple[str, str, str]]:
    """Every (OpenAPI path, method, endpoint) the router answers, HEAD included."""
    for rule in ROUTES.iter_rules():
        path = rule.rule.replace("<path:", "{").replace("<", "{").replace(">", "}")
        for method in sorted(rule.methods or ()):
            yield path, method, str(rule.endpoint)


def build_api(settings: Settings) -> AdminApi:
    """The API with every setting checked now; its Firestore client is made on first use."""
    store = Lazy(lambda: CampaignStore(
        firestore.Client(project=settings.project), settings.counter_shards, keyed_ids(settings)))
    return AdminApi(store, settings.auth_user, settings.auth_password or "", settings.max_body_bytes,
                    check_track_base_url(settings.track_base_url), login_limiter(settings))

