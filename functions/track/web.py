"""HTTP for the track function on functions-framework's ASGI stack (Starlette on uvicorn).

Every request the server hands over gets a 307 (or a 405 for methods that are
not clicks): a link must never end on an error page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote

from functions_framework import aio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from tracking import CLICK_METHODS, ClickRequest, Tracker

ALLOW = ", ".join(sorted(CLICK_METHODS))
# Characters a URL keeps as they are; anything else (non-ASCII) is percent-encoded.
_URL_SAFE = "/:?#[]@!$&'()*+,;=%~-._"

F = TypeVar("F", bound=Callable[..., Any])


def _first_param(query_string: bytes, name: str) -> str | None:
    """The first value of a query parameter, as Flask's ``request.args.get`` gave it."""
    if not query_string:
        return None
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == name:
            return value
    return None


def redirect(location: str) -> Response:
    if not location.isascii():  # a header is Latin-1 on the wire; a URL is ASCII
        location = quote(location, safe=_URL_SAFE)
    return Response(status_code=307, headers={"Location": location, "Cache-Control": "no-store"})


async def answer(tracker: Tracker, request: Request) -> Response:
    """A click (GET) or a preview (HEAD) gets its redirect; other methods are not clicks."""
    method = request.method
    if method not in CLICK_METHODS:
        return Response(status_code=405, headers={"Allow": ALLOW, "Cache-Control": "no-store"})
    headers = request.headers
    click = ClickRequest(
        path=request.scope["path"],
        platform=_first_param(request.scope["query_string"], "platform"),
        user_agent=headers.get("user-agent", ""),
        referrer=headers.get("referer", ""),
        method=method,
    )
    return redirect(await tracker.click(click))


ShutdownHook = Callable[[], Awaitable[None]]
_SERVED: dict[Callable[..., Any], ShutdownHook] = {}
_create_app: Callable[[Any, str, bool], Any] = aio._create_asgi_app_with_function


def _create_app_for(function: Any, signature_type: str, enable_id_logging: bool) -> Any:
    app = _create_app(function, signature_type, enable_id_logging)
    on_shutdown = _SERVED.get(function)
    if on_shutdown is None:
        return app

    async def hand_over(request: Request, exc: Exception) -> Response:
        return await function(request)  # type: ignore[no-any-return]

    app.add_exception_handler(HTTPException, hand_over)
    framework_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with framework_lifespan(app) as state:
            yield state
        await on_shutdown()

    app.router.lifespan_context = lifespan
    return app


def serve(on_shutdown: ShutdownHook) -> Callable[[F], F]:
    """Serve the function every request, and tell it when the instance stops.

    functions-framework's Starlette app (3.10) answers some requests itself:
    404 for ``/robots.txt``, ``/favicon.ico`` and any path with a newline or
    other control character (its catch-all route does not match them), and
    405 for methods outside its list (TRACE). It offers no hook for that, nor
    for shutdown, so the app it builds for this function gets an exception
    handler that passes those requests to the function, and a lifespan that
    awaits ``on_shutdown`` once the server has finished its last request (the
    server exits by re-raising SIGTERM right after, so nothing runs later).
    Must decorate the function in ``main.py``, which functions-framework
    imports before it builds the app.
    """

    def register(function: F) -> F:
        _SERVED[function] = on_shutdown
        aio._create_asgi_app_with_function = _create_app_for
        return function

    return register
