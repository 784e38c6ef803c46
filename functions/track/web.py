"""HTTP for the track function on functions-framework's ASGI stack (uvicorn).

Every request the server hands over gets a 307 (or a 405 for methods that are
not clicks): a link must never end on an error page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote

from functions_framework import aio, execution_id
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from tracking import CLICK_METHODS, ClickRequest, Tracker

from shared.logs import get_logger

log = get_logger("track")

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
    query: bytes = request.scope["query_string"]
    click = ClickRequest(
        path=request.scope["path"],
        platform=_first_param(query, "platform"),
        query=query,
        user_agent=headers.get("user-agent", ""),
        referrer=headers.get("referer", ""),
        method=method,
        forwarded_for=headers.get("x-forwarded-for", ""),
        peer=client[0] if (client := request.scope.get("client")) else None,
    )
    return redirect(await tracker.click(click))


Hook = Callable[[], Awaitable[None]]
Handler = Callable[[Request], Awaitable[Response]]


class ClickApp:
    """The ASGI app functions-framework serves the track function with: every request goes to the function.

    functions-framework's own app (3.10) puts a Starlette router and three
    error-page middlewares in front of a function: its routes answer 404
    for ``/robots.txt``, ``/favicon.ico`` and any path with a newline or
    other control character, 405 for TRACE, and 500 when the function
    raises. A link must end on none of those, and the click pays about
    30 us of CPU to pass through them (``python -m bench.hotpath``), so
    this app keeps only what the function is called with: the framework's
    execution id middleware (see :func:`_create_app_for`) and its function
    wrapper, which sets the execution context the logs read. Whatever the
    function raises (a failed Firestore read, or a bug) is logged with its
    traceback here, and the click still gets its redirect, to the fallback.
    """

    def __init__(self, function: Handler, fallback_url: str, on_startup: Hook, on_shutdown: Hook,
                 enable_id_logging: bool) -> None:
        self.function = function
        self.fallback_url = fallback_url
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        # Unannotated in functions-framework.
        self.handler: Handler = aio._http_func_wrapper(  # type: ignore[no-untyped-call]
            self._redirect_whatever_happens, True, enable_id_logging)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self.handler(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise RuntimeError(f"the track function serves HTTP only, not {scope['type']!r}")

    async def _redirect_whatever_happens(self, request: Request) -> Response:
        try:
            return await self.function(request)
        except Exception as exc:
            log.exception("click sent to the fallback: %r", exc,
                          extra={"path": request.scope["path"], "error": repr(exc)})
            return redirect(self.fallback_url)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Run the startup hook before the server takes its first request; on shutdown, once the server has
        finished its last request, run the shutdown hook.

        A startup hook that fails is logged and the server starts anyway: its
        clicks go to the fallback while the function cannot serve them, and an
        instance that refused to start would only be replaced by one failing
        alike. The server exits by re-raising SIGTERM right after the shutdown
        hook, so nothing runs later.
        """
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.on_startup()
                except Exception:
                    log.exception("the instance's startup hook failed")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.on_shutdown()
                except Exception as exc:
                    log.exception("the instance's shutdown hook failed")
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return


_SERVED: dict[Callable[..., Any], tuple[str, Hook, Hook]] = {}
_create_app: Callable[[Any, str, bool], Any] = aio._create_asgi_app_with_function


def _create_app_for(function: Any, signature_type: str, enable_id_logging: bool) -> Any:
    served = _SERVED.get(function)
    if served is None:
        return _create_app(function, signature_type, enable_id_logging)
    fallback_url, on_startup, on_shutdown = served
    app = ClickApp(function, fallback_url, on_startup, on_shutdown, enable_id_logging)
    return execution_id.AsgiMiddleware(app)  # type: ignore[no-untyped-call]  # unannotated in functions-framework


def serve(*, fallback_url: str, on_startup: Hook, on_shutdown: Hook) -> Callable[[F], F]:
    """Have functions-framework serve the function with :class:`ClickApp`, and tell it when the instance starts
    and stops.

    Must decorate the function in ``main.py``, which functions-framework
    imports before it builds the app.
    """

    def register(function: F) -> F:
        _SERVED[function] = (fallback_url, on_startup, on_shutdown)
        aio._create_asgi_app_with_function = _create_app_for
        return function

    return register
