"""The cold start floor for ``python -m bench.hotpath``: ``bare_aio`` that also loads the official clients.

The track function publishes through ``google.pubsub_v1.PublisherAsyncClient``
and reads campaigns through ``google.cloud.firestore.AsyncClient``. Importing
them (with google-api-core, gRPC, google-auth and requests, which they load)
is what any function that uses them pays before its first request; this one
pays only that, then answers like ``bare_aio``.
"""

import os

import functions_framework.aio
from google.cloud import firestore  # noqa: F401  (imported for its cost)
from google.pubsub_v1 import PublisherAsyncClient  # noqa: F401  (imported for its cost)
from starlette.requests import Request
from starlette.responses import Response

LOCATION = os.environ.get("BENCH_LOCATION", "https://example.com/landing")


@functions_framework.aio.http
async def clients_aio(request: Request) -> Response:
    return Response(status_code=307, headers={"Location": LOCATION, "Cache-Control": "no-store"})
