"""The admin API: campaign CRUD behind HTTP basic auth, answering JSON."""

from __future__ import annotations

import re

import flask
from google.cloud import firestore

from shared.config import AUTH_PASSWORD, ConfigError, Settings
from shared.errors import BadRequest, MethodNotAllowed, NotFound
from shared.http import json_response, read_json
from shared.login_limiter import LoginLimiter, login_limiter
from shared.models import parse_campaign_fields, parse_campaign_id
from shared.platforms import PLATFORMS, is_platform
from shared.store import CampaignStore

# The original README spells the path "campains"; both spellings are served.
_CAMPAIGNS_PATH = re.compile(r"^(?:/admin)?/campa(?:ig|i)ns(?:/(?P<id>[^/]+))?/?$")


class CampaignsApi:
    def __init__(
        self, store: CampaignStore, auth_user: str, auth_password: str, max_body_bytes: int, logins: LoginLimiter
    ) -> None:
        if not auth_password:
            raise ConfigError(f"{AUTH_PASSWORD} is empty; the admin API never runs open")
        self.store = store
        self.logins = logins
        self.auth_user = auth_user
        self.auth_password = auth_password
        self.max_body_bytes = max_body_bytes

    def handle(self, request: flask.Request) -> flask.Response:
        self.logins.require_basic_auth(request, self.auth_user, self.auth_password)
        match = _CAMPAIGNS_PATH.match(request.path)
        if match is None:
            raise NotFound(f"no such endpoint: {request.path}")
        raw_id = match.group("id")
        if raw_id is None:
            return self._collection(request)
        campaign_id = parse_campaign_id(raw_id)
        if campaign_id is None:
            raise NotFound(f"campaign {raw_id} not found")
        return self._member(request, campaign_id)

    def _collection(self, request: flask.Request) -> flask.Response:
        if request.method == "GET":
            campaigns = self.store.list(platforms_filter(request.args.get("platforms", "")))
            return json_response([c.to_json() for c in campaigns])
        if request.method == "POST":
            values = parse_campaign_fields(read_json(request, self.max_body_bytes), partial=False)
            return json_response(self.store.create(values).to_json(), 201)
        raise MethodNotAllowed(f"{request.method} not allowed here; use GET or POST")

    def _member(self, request: flask.Request, campaign_id: int) -> flask.Response:
        if request.method == "GET":
            return json_response(self.store.get(campaign_id).to_json())
        if request.method == "PUT":
            values = parse_campaign_fields(read_json(request, self.max_body_bytes), partial=True)
            return json_response(self.store.update(campaign_id, values).to_json())
        if request.method == "DELETE":
            self.store.delete(campaign_id)
            return flask.Response(status=204)
        raise MethodNotAllowed(f"{request.method} not allowed here; use GET, PUT or DELETE")


def platforms_filter(raw: str) -> list[str]:
    """``Android,IPhone`` as a list; an unknown name is an error, not an empty result."""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if not is_platform(name)]
    if unknown:
        raise BadRequest(f"unsupported platform(s) {unknown!r}; supported: {list(PLATFORMS)}")
    return names


def build_api(settings: Settings) -> CampaignsApi:
    store = CampaignStore(firestore.Client(project=settings.project), settings.counter_shards)
    return CampaignsApi(
        store, settings.auth_user, settings.auth_password or "", settings.max_body_bytes, login_limiter(settings)
    )
