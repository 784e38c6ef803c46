"""The async ceiling for ``python -m bench.hotpath``: an ASGI function that only redirects.

``functions-framework --target bare_aio`` serves it as it serves the track
function: one gunicorn worker running uvicorn on uvloop and httptools.

With ``BENCH_IMPORT_CLIENTS=1`` (the benchmark's ``clients_aio``) it first
imports the official clients the track function uses, Firestore's and
Pub/Sub's, with the google-api-core, gRPC, google-auth and requests they load:
what any function using them pays before its first request, and nothing more.
Its cold start is the floor of the track function's.
"""

import os

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

if os.environ.get("BENCH_IMPORT_CLIENTS") == "1":
    from google.cloud import firestore  # noqa: F401  (imported for its cost)
    from google.pubsub_v1 import PublisherAsyncClient  # noqa: F401  (imported for its cost)

LOCATION = os.environ.get("BENCH_LOCATION", "https://example.com/landing")


@functions_framework.aio.http
async def bare_aio(request: Request) -> Response:
    return Response(status_code=307, headers={"Location": LOCATION, "Cache-Control": "no-store"})
