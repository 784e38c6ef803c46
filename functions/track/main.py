"""Track function: ``GET /track/<id>?platform=<Platform>`` answers a 307 redirect."""

import flask
import functions_framework
from tracking import ClickRequest, build_tracker

from shared import config
from shared.clients import Lazy
from shared.logs import bind_request

settings = config.load(config.PROJECT)
tracker = Lazy(lambda: build_tracker(settings))


@functions_framework.http
def track(request: flask.Request) -> flask.Response:
    bind_request(request.headers, settings.project)
    click = ClickRequest(
        path=request.path,
        platform=request.args.get("platform"),
        user_agent=request.headers.get("User-Agent", ""),
        referrer=request.headers.get("Referer", ""),
        method=request.method,
    )
    location = tracker.get().click(click)
    return flask.Response(status=307, headers={"Location": location, "Cache-Control": "no-store"})
