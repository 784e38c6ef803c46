"""Helpers for tests that need more than a fixture: pulling what was published, making clicks, reading QR codes."""

from __future__ import annotations

import base64
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import png
import pytest
import zxingcpp
from conftest import function_app
from google.cloud import pubsub_v1
from starlette.testclient import TestClient

from shared.events import ClickEvent, split_events
from shared.logs import JsonFormatter


def pull_all(project: str, subscription: str, *, ack: bool = True, max_messages: int = 1000) -> list[Any]:
    """Every message currently on the subscription (one empty pull ends it).

    Only for messages whose publish was already confirmed, so an immediate
    answer is complete; the flag is deprecated for production pulls, not here.
    """
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(project, subscription)
    request = {"subscription": path, "max_messages": max_messages, "return_immediately": True}
    received: list[Any] = []
    try:
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                response = subscriber.pull(request=request, timeout=10)
            if not response.received_messages:
                return received
            received += response.received_messages
            if ack:
                subscriber.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
    finally:
        subscriber.close()


def events_in(messages: list[Any]) -> list[ClickEvent]:
    """The click events these pulled messages carry, one or more each."""
    return [ClickEvent.decode(data) for m in messages for data in split_events(m.message.data)]


def pulled_events(project: str, subscription: str) -> list[ClickEvent]:
    return events_in(pull_all(project, subscription))


def publish(project: str, topic: str, payloads: list[bytes]) -> list[str]:
    publisher = pubsub_v1.PublisherClient()
    path = publisher.topic_path(project, topic)
    return [f.result(timeout=30) for f in [publisher.publish(path, p) for p in payloads]]


def push_envelope(data: bytes, message_id: str = "m-1") -> dict[str, Any]:
    """The body Pub/Sub pushes, which functions-framework turns into a CloudEvent."""
    return {
        "message": {"data": base64.b64encode(data).decode(), "messageId": message_id, "attributes": {}},
        "subscription": "projects/p/subscriptions/s",
    }


def push_cloud_event_headers(message_id: str = "m-1") -> dict[str, str]:
    return {
        "ce-id": message_id,
        "ce-specversion": "1.0",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/t",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "Content-Type": "application/json",
    }


def as_json(response: Any) -> Any:
    return json.loads(response.get_data())


class Track:
    """The track function built from the environment, as deployed, and a client on its event loop."""

    def __init__(self, client: TestClient, module: Any) -> None:
        self.client = client
        self.main = module

    def click(self, path: str, method: str = "GET", **headers: str) -> Any:
        return self.client.request(method, path, headers=headers)

    @property
    def tracker(self) -> Any:
        """The instance's tracker, as the app's event loop holds it (built as the instance started)."""
        return self.client.portal.call(self.main.tracker.get)  # type: ignore[union-attr]

    def registry_loaded(self) -> bool:
        """Whether the instance has read the legacy-id registry (until then, every id is looked up)."""
        tracker = self.tracker
        return self.client.portal.call(lambda: tracker.legacy_ids.current() is not None)  # type: ignore[union-attr]

    def count_reads(self) -> list[int]:
        """Campaign ids read from Firestore from now on, through the deployed cache's own reader."""
        routes, reads = self.tracker.routes, []
        load = routes.load

        async def counted(campaign_id: int) -> Any:
            reads.append(campaign_id)
            return await load(campaign_id)

        routes.load = counted
        return reads


@contextmanager
def serve_track() -> Iterator[Track]:
    app = function_app("track", "track")
    with TestClient(app, follow_redirects=False) as client:
        yield Track(client, sys.modules["main"])


def wait_until(condition: Callable[[], object], timeout: float) -> bool:
    """Whether ``condition()`` came true, asked every 50 ms, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def log_lines(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    """The JSON lines Cloud Logging would receive for records with this message."""
    return [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == message]


def read_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and grey pixels (one byte each) of a PNG, whatever its colour type."""
    width, height, rows, _ = png.Reader(bytes=data).asRGBA8()
    return width, height, b"".join(bytes(row[0::4]) for row in rows)  # red stands for grey: codes are black on white


def read_qr_codes(data: bytes) -> list[str]:
    """What a barcode reader (zxing-cpp, as phone apps use) finds in a PNG."""
    width, height, grey = read_png(data)
    return [code.text for code in zxingcpp.read_barcodes(memoryview(grey).cast("B", (height, width)))]
