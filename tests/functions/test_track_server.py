"""The track function served as Cloud Run serves it: ``functions-framework --target track``.

That is gunicorn with uvicorn workers, on uvloop and httptools. What the
server and the framework would answer by themselves (error pages for odd
paths, long query strings or headers) is only visible through a real server,
so these tests speak raw HTTP to one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faults import unreachable_host
from helpers import pulled_events

from local import emulators
from local.stack import wait_serving
from shared.config import Settings
from shared.ids import CampaignIds
from shared.store import CampaignStore

ROOT = Path(__file__).resolve().parents[2]
FALLBACK = "https://fallback.example/"
# The servers outlive a test, so they keep one id key rather than each test's own.
SERVER_ID_KEY = "track-server-test-campaign-id-key"
CAMPAIGN_URL = "https://campaign.example/"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM, as Cloud Run stops an instance; the seconds it took to exit."""
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        finally:
            emulators.stop_process_group(self.process)
        return time.monotonic() - started

    def log(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines


@dataclass
class Answer:
    status: int
    headers: dict[str, str]


def start_server(env: dict[str, str], log_path: Path, function: str = "track") -> Server:
    port = emulators.free_port()
    with log_path.open("wb") as log:
        process = emulators.start_session(
            ["functions-framework", "--target", function, "--source", str(ROOT / f"functions/{function}/main.py"),
             "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, "PYTHONPATH": str(ROOT), "FALLBACK_URL": FALLBACK, "CAMPAIGN_ID_KEY": SERVER_ID_KEY,
                 **env},
            log=log,
        )
    server = Server(process, port, log_path)
    try:
        wait_serving(port, process)
    except BaseException:
        emulators.stop_process_group(process)
        raise
    return server


def raw_request(port: int, head: bytes) -> Answer:
    """Send these bytes as they are (no client library would send a control character) and read the head."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status_line, *header_lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers)


def get(port: int, target: str, method: str = "GET", **headers: str) -> Answer:
    lines = [f"{method} {target} HTTP/1.1", "Host: track.example", "Connection: close",
             *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items())]
    return raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


@pytest.fixture(scope="module")
def topic_and_subscription(emulator_env: dict[str, str]) -> tuple[str, str]:
    suffix = f"{time.time_ns()}"
    names = (f"server-{suffix}", f"server-agg-{suffix}")
    emulators.create_topic_and_subscription(emulator_env["GOOGLE_CLOUD_PROJECT"], *names)
    return names


@pytest.fixture(scope="module")
def server(
    topic_and_subscription: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    # Its tests read what was published right after a click: a generous wait
    # keeps a busy machine from turning a slow publish into a missing event.
    server = start_server({"CLICKS_TOPIC": topic_and_subscription[0], "PUBLISH_WAIT_SECONDS": "10"},
                          tmp_path_factory.mktemp("track-server") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def campaign_id(db: Any) -> int:
    store = CampaignStore(db, Settings().counter_shards, CampaignIds(SERVER_ID_KEY.encode()))
    return store.create({"redirect_url": CAMPAIGN_URL, "platforms": ["Android"]}).id


@pytest.mark.parametrize("target", [
    "/favicon.ico", "/robots.txt", "/", "/track/{id}%0A?platform=Android", "/track/{id}%0D%0A?platform=Android",
    "/track/1%0A{id}?platform=Android", "/track/%00{id}?platform=Android", "/track/{id}?platform=Android%0A",
    "/track/{id}/%1F?platform=Android",
])
def test_odd_paths_get_the_fallback_redirect_not_an_error_page(server: Server, campaign_id: int, target: str) -> None:
    answer = get(server.port, target.format(id=campaign_id))
    assert (answer.status, answer.headers.get("location")) == (307, FALLBACK)


def test_a_16_kib_query_and_8_kib_headers_still_count(
    server: Server, campaign_id: int, project: str, topic_and_subscription: tuple[str, str]
) -> None:
    pad = "x" * 16 * 1024
    answer = get(server.port, f"/track/{campaign_id}?platform=Android&pad={pad}",
                 User_Agent="Mozilla/5.0 " + "u" * 8 * 1024, Referer="https://r.example/" + "r" * 8 * 1024)
    assert (answer.status, answer.headers.get("location")) == (307, CAMPAIGN_URL)
    [event] = pulled_events(project, topic_and_subscription[1])
    assert event.campaign_id == campaign_id and len(event.user_agent) == len(event.referrer) == 512


def test_forwarded_parameters_leave_as_the_client_sent_them(
    server: Server, db: Any, project: str, topic_and_subscription: tuple[str, str]
) -> None:
    store = CampaignStore(db, Settings().counter_shards, CampaignIds(SERVER_ID_KEY.encode()))
    forwarding = store.create({"redirect_url": CAMPAIGN_URL + "#top", "platforms": ["Android"],
                               "forward_query": True}).id
    # characters a browser would have encoded, sent raw (the parser refuses raw non-ASCII bytes)
    sent = 's=a|b"c&t={x}^`\\&u=%2B+%20&v=%C3%BC'
    answer = get(server.port, f"/track/{forwarding}?platform=Android&{sent}")
    assert (answer.status, answer.headers.get("location")) == (307, f"{CAMPAIGN_URL}?{sent}#top")
    [event] = pulled_events(project, topic_and_subscription[1])
    assert event.campaign_id == forwarding


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_methods_that_are_not_clicks_get_405_and_count_nothing(
    server: Server, campaign_id: int, project: str, topic_and_subscription: tuple[str, str], method: str
) -> None:
    answer = get(server.port, f"/track/{campaign_id}?platform=Android", method=method)
    assert (answer.status, answer.headers.get("allow")) == (405, "GET, HEAD")
    assert pulled_events(project, topic_and_subscription[1]) == []


def test_head_is_a_preview(
    server: Server, campaign_id: int, project: str, topic_and_subscription: tuple[str, str]
) -> None:
    answer = get(server.port, f"/track/{campaign_id}?platform=Android", method="HEAD")
    assert (answer.status, answer.headers.get("location")) == (307, CAMPAIGN_URL)
    [event] = pulled_events(project, topic_and_subscription[1])
    assert event.bot


def test_shutdown_with_pubsub_unreachable_ends_promptly_and_logs_every_pending_event(
    campaign_id: int, tmp_path: Path
) -> None:
    server = start_server({"PUBSUB_EMULATOR_HOST": unreachable_host(), "PUBLISH_WAIT_SECONDS": "0.5",
                           "PUBLISH_DEADLINE_SECONDS": "120", "PUBLISH_MAX_IN_FLIGHT": "4"},
                          tmp_path / "server.log")
    try:
        answers = [get(server.port, f"/track/{campaign_id}?platform=Android") for _ in range(5)]
    finally:
        took = server.stop()
    assert all((a.status, a.headers.get("location")) == (307, CAMPAIGN_URL) for a in answers)
    assert took < 15, "the instance hung on its publisher at shutdown"
    lines = [line for line in server.log() if line.get("logger") == "o7tracker.publishing"]
    assert len({line["click_id"] for line in lines}) == 5 and len(lines) == 5
    waited, (in_flight, queued) = lines[:3], lines[3:]
    assert all(line["outcome"] == "unknown" and "NotConfirmed" in line["error"] for line in waited)
    # The last two never waited (the breaker was open). The fourth click had the
    # fourth Publish call, still trying at shutdown: it may have landed. The
    # fifth was queued behind the four, never sent.
    assert in_flight["outcome"] == "unknown" and "ShutDown" in in_flight["error"]
    assert queued["outcome"] == "failed" and "NotSent" in queued["error"]
