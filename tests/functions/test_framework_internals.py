"""The functions-framework internals the track function is served through (functions/track/web.py).

functions-framework has no public way to serve an ASGI function without its
router and error pages, so ``web.serve`` replaces one of its private functions
and builds the app from its private parts, and shared/logs reads the execution
context it keeps. A new version of the framework may rename any of them, or stop
calling one where web.py expects: the track function would then fail to start,
or be served again by the framework's own app, whose 404s and 500s a link must
never end on. These tests name what moved, then check through the track
function's own app that the framework serves it the replaced way.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

import functions_framework
import pytest
import web
from functions_framework import aio, execution_id
from helpers import Track, serve_track
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from shared import logs

FALLBACK = "https://fallback.example/"
VERSION = f"functions-framework {importlib.metadata.version('functions-framework')}"


class Private(NamedTuple):
    module: ModuleType
    name: str
    parameters: tuple[str, ...] | None  # a function's, or its __init__'s for a class; None when never called
    relied_on: str


PRIVATE = [
    Private(aio, "_create_asgi_app_with_function", ("function", "signature_type", "enable_id_logging"),
            "web.serve replaces it, so that the framework builds the track function's app as web.ClickApp"),
    Private(aio, "_http_func_wrapper", ("function", "is_async", "enable_id_logging"),
            "web.ClickApp calls the function through it, which sets the request's execution context"),
    Private(execution_id, "AsgiMiddleware", ("self", "app"),
            "web puts it in front of web.ClickApp, to give every request an execution id"),
    Private(execution_id, "execution_context_var", None,
            "_http_func_wrapper sets a request's execution id in it, and shared/logs reads it from there"),
]


class CallSite(NamedTuple):
    module: ModuleType
    caller: str
    callee: str  # the name it calls
    relied_on: str


CALL_SITES = [
    CallSite(functions_framework, "create_app", "create_asgi_app_from_module",
             "Cloud Functions' `functions-framework --target track` builds an @aio.http function's app there"),
    CallSite(aio, "create_asgi_app_from_module", "_create_asgi_app_with_function",
             "only a call that looks it up by name, after main.py ran, reaches web.serve's replacement"),
    CallSite(aio, "create_asgi_app", "_create_asgi_app_with_function",
             "`functions-framework --asgi` builds the app there, and only such a call reaches web.serve's replacement"),
    CallSite(aio, "_create_asgi_app_with_function", "_http_func_wrapper",
             "the framework's own app calls an HTTP function through it, as web.ClickApp does"),
]


def definitions(module: ModuleType) -> dict[str, ast.AST]:
    """The module's top-level functions, classes and variables, from its source.

    From the source, not the module: web.serve has replaced one of them there.
    """
    found: dict[str, ast.AST] = {}
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    found[target.id] = node
    return found


def parameters(node: ast.AST) -> tuple[str, ...] | None:
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        return parameters(init) if init is not None else None
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return tuple(arg.arg for arg in node.args.args)
    return None


@pytest.mark.parametrize("private", PRIVATE, ids=lambda p: f"{p.module.__name__}.{p.name}")
def test_each_private_object_the_track_function_relies_on_is_there(private: Private) -> None:
    qualified = f"{private.module.__name__}.{private.name}"
    node = definitions(private.module).get(private.name)
    assert node is not None, f"{VERSION} has no {qualified}: {private.relied_on} (functions/track/web.py)"
    assert parameters(node) == private.parameters, (
        f"{VERSION} changed {qualified}'s parameters to {parameters(node)}: {private.relied_on}")


@pytest.mark.parametrize("site", CALL_SITES, ids=lambda s: f"{s.caller}->{s.callee}")
def test_the_framework_still_calls_each_where_web_expects(site: CallSite) -> None:
    caller = definitions(site.module).get(site.caller)
    assert caller is not None, f"{VERSION} has no {site.module.__name__}.{site.caller}, where {site.relied_on}"
    calls = [n for n in ast.walk(caller) if isinstance(n, ast.Call) and ast.unparse(n.func) == site.callee]
    assert calls, (f"{VERSION}'s {site.module.__name__}.{site.caller} no longer calls {site.callee} by that name: "
                   f"{site.relied_on} (functions/track/web.py)")


@pytest.fixture
def track(db: Any, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Track]:
    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    with serve_track() as track:
        yield track


def test_the_framework_builds_the_track_functions_app_with_web_serves_replacement(track: Track) -> None:
    app = track.client.app
    assert isinstance(app, execution_id.AsgiMiddleware | web.ClickApp), (
        f"{VERSION} built the track function's app ({type(app).__name__}) without web.serve's replacement "
        "of aio._create_asgi_app_with_function")
    assert isinstance(app, execution_id.AsgiMiddleware) and isinstance(app.app, web.ClickApp), (
        "web.ClickApp is not behind execution_id.AsgiMiddleware, as the framework's own app is")
    assert app.app.function is track.main.track


def test_the_frameworks_own_app_has_the_middleware_web_puts_in_front(track: Track) -> None:
    frameworks_own = web._create_app(track.main.track, "http", False)
    assert execution_id.AsgiMiddleware in [middleware.cls for middleware in frameworks_own.user_middleware], (
        f"{VERSION} no longer puts execution_id.AsgiMiddleware in front of a function, as web does")


@pytest.mark.parametrize("path", ["/robots.txt", "/favicon.ico"])
def test_paths_the_frameworks_router_answers_itself_reach_the_track_function(track: Track, path: str) -> None:
    # The app the framework itself builds, to show that these paths tell the two apps apart.
    frameworks_own = TestClient(web._create_app(track.main.track, "http", False))
    assert frameworks_own.get(path).status_code == 404
    answer = track.click(path)
    assert (answer.status_code, answer.headers["Location"]) == (307, FALLBACK)


def test_the_instances_startup_hook_runs_before_its_first_request(db: Any, pubsub_names: tuple[str, str]) -> None:
    with serve_track() as track:
        assert track.client.app.app.on_startup is track.main.startup
        assert track.main.tracker.built() is not None  # built as the server started, before any click


def test_the_instances_shutdown_hook_runs_when_the_server_stops(
    db: Any, pubsub_names: tuple[str, str]
) -> None:
    ran: list[str] = []
    with serve_track() as track:
        click_app = track.client.app.app
        assert click_app.on_shutdown is track.main.shutdown
        hook = click_app.on_shutdown

        async def observed() -> None:
            ran.append("shutdown")
            await hook()

        click_app.on_shutdown = observed
        track.click("/track/1?platform=Android")
        assert ran == []
    assert ran == ["shutdown"]


def test_a_request_gets_an_execution_id_and_the_function_runs_in_its_context() -> None:
    """As shared/logs reads it; the track function's own lines: tests/functions/test_log_correlation.py."""
    seen: list[str | None] = []

    async def function(request: Request) -> Response:
        seen.append(logs.correlation().get(logs.LABELS, {}).get("execution_id"))
        return Response()

    async def nothing() -> None:
        pass

    served = web.serve(fallback_url=FALLBACK, on_startup=nothing, on_shutdown=nothing)(function)
    client = TestClient(aio._create_asgi_app_with_function(served, "http", False))
    client.get("/", headers={"Function-Execution-Id": "exec-7"})
    client.get("/")
    assert seen[0] == "exec-7", (
        "the function ran outside the execution context aio._http_func_wrapper sets from the request's header "
        "(execution_id.execution_context_var)")
    assert seen[1], "a request without an execution id got none: execution_id.AsgiMiddleware makes one up"
