"""Track function: ``GET /track/<id>?platform=<Platform>`` answers a 307 redirect."""

import gc

import functions_framework.aio
import web
from starlette.requests import Request
from starlette.responses import Response
from tracking import build_tracker, read_legacy_ids

from shared import config
from shared.clients import Lazy
from shared.logs import bind_request

settings = config.load(config.PROJECT, config.CAMPAIGN_ID_KEY)
legacy_ids = read_legacy_ids(settings)  # at cold start, so that no click waits for it
# Built on the first request, inside the event loop its async clients bind to.
tracker = Lazy(lambda: build_tracker(settings, legacy_ids))

# What the cold start made lives as long as the instance: frozen, the collector never scans
# it again, and a click's short-lived objects are collected in fewer, larger passes.
gc.freeze()
gc.set_threshold(50_000, 20, 20)


async def shutdown() -> None:
    built = tracker.built()
    if built is not None:
        await built.aclose()


@web.serve(fallback_url=settings.fallback_url, on_shutdown=shutdown)
@functions_framework.aio.http
async def track(request: Request) -> Response:
    bind_request(request.headers, settings.project)
    return await web.answer(tracker.get(), request)
