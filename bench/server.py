"""One function under functions-framework's own gunicorn server, with bench-only counters.

    python -m bench.server --source functions/track/main.py --target track --port 8090

Serves exactly as ``functions-framework --target ... --source ...`` does (its
``GunicornApplication``, so ``WORKERS`` and ``THREADS`` are read as there),
with a thin WSGI layer in front that the app code knows nothing about:

- ``GET /__bench/stats`` answers JSON counters, summed over every worker:
  ``reads``, the campaign lookups that went to Firestore (each is one document
  read), and ``redirects``, the 307s answered with ``BENCH_LOCATION``, i.e.
  the clicks the server said yes to, including those whose client had gone
  (wrk drops its in-flight requests when its time is up).

The reads are counted by wrapping ``CampaignStore.get_route``, the track
function's route loader, before the app is built: every cache miss calls it
once, and nothing else does.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable
from typing import Any

import functions_framework
from functions_framework._http.gunicorn import GunicornApplication

from shared.store import CampaignStore

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
STATS_PATH = "/__bench/stats"

# Shared memory made before gunicorn forks, so every worker adds to the same counters.
_reads = multiprocessing.Value("q", 0)
_redirects = multiprocessing.Value("q", 0)


def _add(counter: Any) -> None:
    with counter.get_lock():
        counter.value += 1


def count_route_reads() -> None:
    original = CampaignStore.get_route

    def get_route(self: CampaignStore, campaign_id: int) -> Any:
        _add(_reads)
        return original(self, campaign_id)

    CampaignStore.get_route = get_route  # type: ignore[method-assign]


def with_counters(app: WsgiApp, location: str) -> WsgiApp:
    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == STATS_PATH:
            body = json.dumps({"reads": _reads.value, "redirects": _redirects.value}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]

        def counting_start_response(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            if status.startswith("307") and ("Location", location) in headers:
                _add(_redirects)
            return start_response(status, headers, *args)

        return app(environ, counting_start_response)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="the function's main.py")
    parser.add_argument("--target", required=True, help="the function's name")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    count_route_reads()
    app = functions_framework.create_app(args.target, args.source)
    location = os.environ.get("BENCH_LOCATION", "https://example.com/landing")
    # debug=False: the production path, gunicorn with WORKERS and THREADS from the environment.
    # No control socket: its default path is one per user, and the bench runs several servers.
    server = GunicornApplication(with_counters(app, location), "127.0.0.1", args.port, False,
                                 control_socket_disable=True)
    server.run()


if __name__ == "__main__":
    main()
