"""The async ceiling for ``python -m bench.hotpath``: an ASGI function that only redirects.

``functions-framework --target bare_aio`` serves it as it serves the track
function: one gunicorn worker running uvicorn on uvloop and httptools.
"""

import os

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

LOCATION = os.environ.get("BENCH_LOCATION", "https://example.com/landing")


@functions_framework.aio.http
async def bare_aio(request: Request) -> Response:
    return Response(status_code=307, headers={"Location": LOCATION, "Cache-Control": "no-store"})
