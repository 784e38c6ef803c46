"""Track function: ``GET /track/<id>?platform=<Platform>`` answers a 307 redirect."""

import functions_framework.aio
import web
from starlette.requests import Request
from starlette.responses import Response
from tracking import build_tracker

from shared import config
from shared.clients import Lazy
from shared.logs import bind_request

settings = config.load(config.PROJECT)
# Built on the first request, inside the event loop its async clients bind to.
tracker = Lazy(lambda: build_tracker(settings))


async def shutdown() -> None:
    built = tracker.built()
    if built is not None:
        await built.aclose()


@web.serve(on_shutdown=shutdown)
@functions_framework.aio.http
async def track(request: Request) -> Response:
    bind_request(request.headers, settings.project)
    return await web.answer(tracker.get(), request)
