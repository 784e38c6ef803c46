"""The Flask ceiling for ``python -m bench.hotpath``: an HTTP function that only redirects.

Served as functions-framework serves a Flask function (gunicorn, gthread), with
``WORKERS=1`` and ``THREADS=80``, what the synchronous track function deployed with.
"""

import os

import flask
import functions_framework

LOCATION = os.environ.get("BENCH_LOCATION", "https://example.com/landing")


@functions_framework.http
def bare_flask(request: flask.Request) -> flask.Response:
    return flask.Response(status=307, headers={"Location": LOCATION, "Cache-Control": "no-store"})
