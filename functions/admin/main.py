"""Admin function: campaign CRUD under ``/admin/campaigns``, behind HTTP basic auth."""

import flask
import functions_framework
from campaigns_api import build_api

from shared import config
from shared.clients import Lazy
from shared.http import json_errors
from shared.logs import bind_request
from shared.shard_guard import guard_counter_shards

settings = config.load(config.AUTH_PASSWORD)  # never run open
guard_counter_shards(settings)
api = Lazy(lambda: build_api(settings))


@functions_framework.http
@json_errors
def admin(request: flask.Request) -> flask.Response:
    bind_request(request.headers, settings.project)
    return api.get().handle(request)
