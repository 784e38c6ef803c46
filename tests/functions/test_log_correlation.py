"""Log lines written while serving a request carry its trace and functions-framework's execution id."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import function_app
from helpers import push_cloud_event_headers, push_envelope, serve_track

from shared import logs
from shared.store import CampaignStore

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADERS = {
    "traceparent": {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
    "X-Cloud-Trace-Context": {"X-Cloud-Trace-Context": f"{TRACE_ID}/123;o=1"},
}


def lines(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    """The matching records, formatted exactly as Cloud Logging receives them."""
    return [json.loads(logs.JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == message]


@pytest.mark.parametrize("header", sorted(HEADERS))
def test_a_clicks_error_line_carries_its_requests_trace_and_execution_id(
    header: str, db: Any, project: str, pubsub_names: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    campaign = CampaignStore(db, counter_shards=16).create(
        {"redirect_url": "https://e.com/", "platforms": ["Android"]})
    monkeypatch.setenv("CLICKS_TOPIC", "no-such-topic-" + str(time.time_ns()))  # the emulator answers NOT_FOUND
    with serve_track() as track:
        answer = track.click(f"/track/{campaign.id}?platform=Android",
                             **HEADERS[header], **{"Function-Execution-Id": "exec-1"})
        assert answer.status_code == 307

        [line] = lines(caplog, "click event publish failed")
        assert line["severity"] == "ERROR" and line["event"]["campaign_id"] == campaign.id
        assert line[logs.TRACE] == f"projects/{project}/traces/{TRACE_ID}"
        assert line[logs.SPAN_ID] in ("00f067aa0ba902b7", "000000000000007b")
        assert line[logs.TRACE_SAMPLED] is True
        assert line[logs.LABELS] == {"execution_id": "exec-1"}

        # The next request on the same event loop brings no trace: nothing of the last one is left.
        caplog.clear()
        track.click(f"/track/{campaign.id}?platform=Android")
        [line] = lines(caplog, "click event publish failed")
        assert logs.TRACE not in line and logs.SPAN_ID not in line
    assert line[logs.LABELS]["execution_id"] not in ("", "exec-1")  # functions-framework made one up


def test_an_event_functions_lines_carry_the_execution_id(
    db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = function_app("aggregate", "aggregate_event").test_client()
    answer = client.post("/", json=push_envelope(b"not json", "m-poison"),
                         headers={**push_cloud_event_headers("m-poison"), "Function-Execution-Id": "exec-2"})
    assert answer.status_code == 200
    [line] = lines(caplog, "poison click event acknowledged")
    assert line["message_ids"] == ["m-poison"]
    assert line[logs.LABELS] == {"execution_id": "exec-2"}


def test_lines_outside_a_request_carry_nothing_of_one(caplog: pytest.LogCaptureFixture) -> None:
    # A fresh thread, as at cold start: this one has served the requests of other tests.
    thread = threading.Thread(target=logs.get_logger("test").warning, args=("at cold start",))
    thread.start()
    thread.join()
    [line] = lines(caplog, "at cold start")
    assert not {logs.TRACE, logs.SPAN_ID, logs.LABELS} & line.keys()


PROBE = '''
from shared.logs import bind_request, get_logger

log = get_logger("probe")


async def probe_async(request):
    bind_request(request.headers, "my-project")
    log.warning("probe")
    return "ok"


def probe_sync(request):
    bind_request(request.headers, "my-project")
    log.warning("probe")
    return "ok"
'''


@pytest.mark.parametrize("target", ["probe_async", "probe_sync"])
@pytest.mark.parametrize("header", sorted(HEADERS))
def test_on_the_asyncio_stack_too(
    target: str, header: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """functions-framework's Starlette stack, which runs a sync function on a thread with a copied context.

    No function of ours runs on it yet, so a probe function written here stands in.
    """
    from functions_framework.aio import create_asgi_app

    source = tmp_path / "main.py"
    source.write_text(PROBE)
    app = create_asgi_app(target, str(source), "http")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = {**HEADERS[header], "Function-Execution-Id": "exec-3"}
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("test", 80), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200

    [line] = lines(caplog, "probe")
    assert line[logs.TRACE] == f"projects/my-project/traces/{TRACE_ID}"
    assert line[logs.LABELS] == {"execution_id": "exec-3"}
