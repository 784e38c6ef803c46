"""The original o7tracker URL layout on one port, over the three functions.

An ASGI app: ``/admin/...`` goes to the admin function, ``/tasks/update_stats``
(basic auth, as the original's cron endpoint) to the aggregate drain, and
everything else to the track function, so ``/`` and stray paths get its
fallback redirect. The track function runs as deployed, on functions-framework's
async stack; the admin and aggregate functions are Flask (WSGI) apps, run in
a2wsgi's thread pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

import flask
import functions_framework
from a2wsgi import WSGIMiddleware

from shared import config
from shared.errors import AppError
from shared.http import error_response
from shared.login_limiter import login_limiter

ROOT = Path(__file__).resolve().parent.parent
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Scope = MutableMapping[str, Any]
AsgiApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def function_app(name: str, target: str) -> Any:
    """A function's app as Cloud Functions builds it: Flask (WSGI), or ASGI for an aio function."""
    return functions_framework.create_app(target, str(ROOT / "functions" / name / "main.py"))


def input_terminated(app: WsgiApp) -> WsgiApp:
    """Tell werkzeug that the request body ends where the client's does, as gunicorn does when deployed.

    a2wsgi's input stream ends with the ASGI request's body, chunked or not, but does not say
    so; werkzeug then reads a body without a Content-Length (chunked) as empty, and a 10 MB
    chunked body would answer 400 "malformed JSON" rather than 413.
    """

    def terminated(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["wsgi.input_terminated"] = True
        return app(environ, start_response)

    return terminated


def with_basic_auth(app: WsgiApp, settings: config.Settings) -> WsgiApp:
    """Basic auth as the admin API checks it, failed logins limited alike."""
    logins = login_limiter(settings)

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            logins.require_basic_auth(flask.Request(environ), settings.auth_user, settings.auth_password or "")
        except AppError as error:
            return error_response(error)(environ, start_response)
        return app(environ, start_response)

    return guarded


def create_gateway() -> AsgiApp:
    settings = config.load(config.PROJECT, config.AUTH_PASSWORD)
    track: AsgiApp = function_app("track", "track")
    admin = WSGIMiddleware(input_terminated(function_app("admin", "admin")))
    update_stats = WSGIMiddleware(input_terminated(
        with_basic_auth(function_app("aggregate", "aggregate_http"), settings)))

    async def gateway(scope: Scope, receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/admin" or path.startswith("/admin/")):
            await admin(scope, receive, send)  # type: ignore[arg-type]
        elif scope["type"] == "http" and path.rstrip("/") == "/tasks/update_stats":
            await update_stats(scope, receive, send)  # type: ignore[arg-type]
        else:
            await track(scope, receive, send)  # lifespan included

    return gateway
