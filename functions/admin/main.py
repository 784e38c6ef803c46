"""Admin function: campaign CRUD under ``/admin/campaigns``, behind HTTP basic auth."""

import flask
import functions_framework
from campaigns_api import build_api

from shared import config
from shared.clients import Lazy
from shared.http import json_errors

settings = config.load(config.AUTH_PASSWORD, config.CAMPAIGN_ID_KEY)  # never run open
api = Lazy(lambda: build_api(settings))


@functions_framework.http
@json_errors
def admin(request: flask.Request) -> flask.Response:
    return api.get().handle(request)
