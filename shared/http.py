"""HTTP plumbing shared by the functions: JSON answers, errors, basic auth, bodies."""

from __future__ import annotations

import csv
import functools
import hmac
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from shared.errors import AppError, BadRequest, PayloadTooLarge, Unauthorized
from shared.logs import get_logger

log = get_logger("http")

# Nothing the API accepts nests this deep; the limit keeps every later walk
# over a body (validation, error messages) far from Python's recursion limit.
MAX_JSON_DEPTH = 32
# A streamed answer goes out in pieces of about this size: few enough writes, little memory.
STREAM_CHUNK_CHARS = 64 * 1024

Handler = Callable[[flask.Request], flask.Response]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> flask.Response:
    return flask.Response(
        _json(body),
        status=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
        mimetype="application/json",
    )


def _json(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"))


def json_array_response(items: Iterable[Any], headers: dict[str, str] | None = None) -> flask.Response:
    """``json_response(list(items))`` byte for byte, sent as the items come: see :func:`streamed_response`."""

    def pieces() -> Iterator[str]:
        yield "["
        for index, item in enumerate(items):
            yield "," + _json(item) if index else _json(item)
        yield "]"

    return streamed_response(pieces(), "application/json", {"Cache-Control": "no-store", **(headers or {})})


def empty_response(status: int, headers: dict[str, str] | None = None) -> flask.Response:
    """An answer without a body, so without a Content-Type (werkzeug would give it text/html)."""
    response = flask.Response(status=status, headers=headers)
    del response.headers["Content-Type"]
    return response


def csv_response(
    filename: str, header: Sequence[str], rows: Iterable[Sequence[object]], headers: dict[str, str] | None = None
) -> flask.Response:
    """RFC 4180: a header row, fields quoted where needed, CRLF line ends; offered as a download.

    Rows are written as they come: see :func:`streamed_response`.
    """

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        for row in itertools.chain([header], rows):
            writer.writerow(row)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    disposition = f'attachment; filename="{filename}"'
    return streamed_response(
        lines(), "text/csv", {"Cache-Control": "no-store", "Content-Disposition": disposition, **(headers or {})})


def streamed_response(pieces: Iterable[str], mimetype: str, headers: dict[str, str]) -> flask.Response:
    """An answer sent while it is made, in chunks of ``STREAM_CHUNK_CHARS``, so memory stays flat however long it is.

    The first chunk is made before the answer begins: an answer that fits in
    it is sent whole, with its length, and an error while making it (Firestore
    unreachable, say) still answers as JSON. Past it the status is sent and
    cannot change: an error then is logged and the server cuts the connection
    before the end (no final chunk), so no client takes what came for the whole.
    """
    chunks = _chunks(pieces)
    first = next(chunks, b"")
    if len(first) < STREAM_CHUNK_CHARS:  # only the last chunk can be shorter
        return flask.Response(first, headers=headers, mimetype=mimetype)
    return flask.Response(_logged(itertools.chain([first], chunks)), headers=headers, mimetype=mimetype)


def _chunks(pieces: Iterable[str]) -> Iterator[bytes]:
    pending: list[str] = []
    size = 0
    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size >= STREAM_CHUNK_CHARS:
            yield "".join(pending).encode()
            pending, size = [], 0
    if pending:
        yield "".join(pending).encode()


def _logged(chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from chunks
    except Exception:
        log.exception("answer cut short: it failed after it had begun")
        raise


def error_response(error: AppError) -> flask.Response:
    headers = {"WWW-Authenticate": 'Basic realm="o7tracker", charset="UTF-8"'} if error.status == 401 else {}
    return json_response({"status": "error", "msg": error.msg}, error.status, {**headers, **error.headers})


def framework_error_response(error: HTTPException) -> flask.Response:
    """What Flask or werkzeug would answer as an HTML page (say, a path its router cannot match), as JSON."""
    status = error.code or 500
    if status >= 500:
        log.error("framework error", extra={"status": status, "description": error.description})
    headers = {k: v for k, v in error.get_headers() if k.lower() not in ("content-type", "content-length")}
    return json_response({"status": "error", "msg": error.description or error.name}, status, headers)


def json_errors(handler: Handler) -> Handler:
    """The one place errors become answers: app and framework errors as JSON, anything else a logged 500."""

    @functools.wraps(handler)
    def wrapper(request: flask.Request) -> flask.Response:
        try:
            return handler(request)
        except AppError as error:
            return error_response(error)
        except HTTPException as error:
            return framework_error_response(error)
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
    """The request's JSON body, refusing oversized or malformed input.

    The declared type is the caller's to check (the admin requires JSON: see
    functions/admin/browser.py). A body without a length (chunked) is read up to
    the limit, so it is refused as oversized as soon as it passes it. Python's
    parser accepts ``NaN`` and ``Infinity``, which are not JSON, and strings
    with lone surrogates, which no store can keep: both are refused.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"body larger than {max_bytes} bytes")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"body larger than {max_bytes} bytes")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    _check_json_value(body)
    return body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_json_value(body: Any) -> None:
    """Depth and text checks, iteratively so that no body can exhaust the stack."""
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("malformed JSON: a string holds a lone surrogate (\\ud800-\\udfff)") from None
