"""Admin function: campaigns, their stats and the dashboard under ``/admin``, behind HTTP basic auth."""

import flask
import functions_framework
from browser import secure, with_security_headers
from campaigns_api import build_api
from werkzeug.exceptions import HTTPException

from shared import config
from shared.http import framework_error_response, json_errors
from shared.logs import bind_request
from shared.shard_guard import guard_counter_shards

settings = config.load(config.AUTH_PASSWORD, config.CAMPAIGN_ID_KEY)  # never run open
api = build_api(settings)  # every setting checked before the shard guard's Firestore call
guard_counter_shards(settings)


def framework_error(error: HTTPException) -> flask.Response:
    return secure(framework_error_response(error))


# Flask answers a few requests before the function runs (a path its router cannot match, such
# as one holding a newline): those answer the same JSON errors as the function's own, with the
# same headers.
functions_framework.errorhandler(HTTPException)(framework_error)


@functions_framework.http
@with_security_headers
@json_errors
def admin(request: flask.Request) -> flask.Response:
    bind_request(request.headers, settings.project)
    return api.handle(request)
