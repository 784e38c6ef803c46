"""Track function: ``GET /track/<id>?platform=<Platform>`` answers a 307 redirect."""

import functions_framework.aio
import web
from starlette.requests import Request
from starlette.responses import Response
from tracking import build_tracker

from shared import config
from shared.clients import Lazy

settings = config.load(config.PROJECT)
# Built on the first request, inside the event loop its async clients bind to.
tracker = Lazy(lambda: build_tracker(settings))


@web.every_request
@functions_framework.aio.http
async def track(request: Request) -> Response:
    return await web.answer(tracker.get(), request)
