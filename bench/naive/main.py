"""``python -m bench.hotpath``'s naive case: the bare redirect plus one publish, waited for.

The Pub/Sub client keeps every default (no batch settings), which is what a
first version of the track function would do; it shows what the publish alone
costs before any tuning. The client is built on first use, in the worker
process, because a gRPC channel must not be created before gunicorn forks.
"""

import os
import threading

import flask
import functions_framework
from google.cloud import pubsub_v1

LOCATION = os.environ.get("BENCH_LOCATION", "https://example.com/landing")
PAYLOAD = b'{"bench":"naive"}'
_lock = threading.Lock()
_client: pubsub_v1.PublisherClient | None = None


def _publisher() -> pubsub_v1.PublisherClient:
    global _client
    with _lock:
        if _client is None:
            _client = pubsub_v1.PublisherClient()
        return _client


@functions_framework.http
def naive(request: flask.Request) -> flask.Response:
    client = _publisher()
    topic = client.topic_path(os.environ["GOOGLE_CLOUD_PROJECT"], os.environ["CLICKS_TOPIC"])
    client.publish(topic, PAYLOAD).result(timeout=10)
    return flask.Response(status=307, headers={"Location": LOCATION, "Cache-Control": "no-store"})
