"""Track function: ``GET /track/<id>?platform=<Platform>`` answers a 307 redirect."""
# ruff: noqa: E402  (the collector is tuned before the imports)

import gc

# What the cold start makes lives as long as the instance: the collector would scan it again and
# again and free nothing. So it runs seldom from the start (a collection while the imports below
# allocate cost about 25 ms of a cold start), a click's short-lived objects are collected in fewer,
# larger passes, and what the imports made is frozen once they are done.
gc.set_threshold(50_000, 20, 20)

import functions_framework.aio
import web
from starlette.requests import Request
from starlette.responses import Response
from tracking import start_tracker

from shared import config
from shared.clients import AsyncLazy
from shared.logs import bind_request

gc.freeze()

settings = config.load(config.PROJECT, config.CAMPAIGN_ID_KEY)
tracker = AsyncLazy(lambda: start_tracker(settings))


async def startup() -> None:
    """Build the tracker as the worker starts (after the fork, in the event loop its async clients bind to):
    the server takes its first click once the tracker is ready."""
    await tracker.get()


async def shutdown() -> None:
    built = tracker.built()
    if built is not None:
        await built.aclose()


@web.serve(fallback_url=settings.fallback_url, on_startup=startup, on_shutdown=shutdown)
@functions_framework.aio.http
async def track(request: Request) -> Response:
    bind_request(request.headers, settings.project)
    return await web.answer(await tracker.get(), request)
