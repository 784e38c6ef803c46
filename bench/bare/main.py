"""The ceiling for ``python -m bench.hotpath``: an HTTP function that only redirects.

Served by the same server command and settings as the track function, so the
difference between the two is what a click costs beyond the framework itself.
"""

import os

import flask
import functions_framework

LOCATION = os.environ.get("BENCH_LOCATION", "https://example.com/landing")


@functions_framework.http
def bare(request: flask.Request) -> flask.Response:
    return flask.Response(status=307, headers={"Location": LOCATION, "Cache-Control": "no-store"})
