"""Track function: ``GET /track/<id>?platform=<Platform>`` answers a 307 redirect."""
# ruff: noqa: E402  (the collector is tuned before the imports)

from shared.collector import collect_seldom, freeze_imports

collect_seldom()

import functions_framework.aio
import web
from starlette.requests import Request
from starlette.responses import Response
from tracking import start_tracker

from shared import config
from shared.clients import AsyncLazy
from shared.logs import bind_request

freeze_imports()

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
