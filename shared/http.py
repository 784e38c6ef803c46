"""HTTP plumbing shared by the functions: JSON answers, errors, basic auth, bodies."""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable
from typing import Any

import flask

from shared.errors import AppError, BadRequest, PayloadTooLarge, Unauthorized
from shared.logs import get_logger

log = get_logger("http")

Handler = Callable[[flask.Request], flask.Response]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> flask.Response:
    return flask.Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
        mimetype="application/json",
    )


def error_response(error: AppError) -> flask.Response:
    headers = {"WWW-Authenticate": 'Basic realm="o7tracker", charset="UTF-8"'} if error.status == 401 else {}
    return json_response({"status": "error", "msg": error.msg}, error.status, {**headers, **error.headers})


def json_errors(handler: Handler) -> Handler:
    """The one place errors become answers: app errors as JSON, anything else a logged 500."""

    @functools.wraps(handler)
    def wrapper(request: flask.Request) -> flask.Response:
        try:
            return handler(request)
        except AppError as error:
            return error_response(error)
        except Exception:
            log.exception("unhandled error", extra={"method": request.method, "path": request.path})
            return json_response({"status": "error", "msg": "Internal server error."}, 500)

    return wrapper


def require_basic_auth(request: flask.Request, user: str, password: str) -> None:
    """Constant-time and case-sensitive; both parts are always compared."""
    auth = request.authorization
    given_user = auth.username if auth and auth.type == "basic" and auth.username else ""
    given_password = auth.password if auth and auth.type == "basic" and auth.password else ""
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    if not (user_ok and password_ok):
        raise Unauthorized("Missing or wrong credentials.")


def read_json(request: flask.Request, max_bytes: int) -> Any:
    """The request's JSON body, whatever its declared type, refusing oversized or malformed input.

    The content type is not enforced: ``curl -d`` sends a form type by default,
    and the body either parses as JSON or is refused with a clear message.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"body larger than {max_bytes} bytes")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"body larger than {max_bytes} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
