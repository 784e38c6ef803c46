"""The original o7tracker URL layout on one port, over the three functions.

``/admin/...`` goes to the admin function, ``/tasks/update_stats`` (basic
auth, as the original's cron endpoint) to the aggregate drain, everything
else to the track function, so ``/`` and stray paths get its fallback redirect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import flask
import functions_framework

from shared import config
from shared.errors import AppError
from shared.http import error_response
from shared.login_limiter import login_limiter

ROOT = Path(__file__).resolve().parent.parent
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def function_app(name: str, target: str) -> WsgiApp:
    return functions_framework.create_app(target, str(ROOT / "functions" / name / "main.py"))


def create_gateway() -> WsgiApp:
    settings = config.load(config.PROJECT, config.AUTH_PASSWORD)
    track = function_app("track", "track")
    admin = function_app("admin", "admin")
    update_stats = function_app("aggregate", "aggregate_http")
    logins = login_limiter(settings)

    def gateway(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/admin" or path.startswith("/admin/"):
            return admin(environ, start_response)
        if path.rstrip("/") == "/tasks/update_stats":
            try:
                logins.require_basic_auth(flask.Request(environ), settings.auth_user, settings.auth_password or "")
            except AppError as error:
                return error_response(error)(environ, start_response)
            return update_stats(environ, start_response)
        return track(environ, start_response)

    return gateway
