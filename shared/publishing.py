"""Publishing click events to Pub/Sub, waiting for the outcome of each."""

from __future__ import annotations

from typing import Protocol

from google.cloud import pubsub_v1

from shared.events import ClickEvent
from shared.logs import get_logger

log = get_logger("publishing")


class PublishFuture(Protocol):
    def result(self, timeout: float | None = None) -> object: ...


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, *, campaign_id: str) -> PublishFuture: ...


class ClickPublisher:
    """Publishes a click and returns only once Pub/Sub has confirmed or refused it.

    A Cloud Function may lose its CPU once it has answered, so the redirect
    waits for the outcome. A refused publish is logged at ERROR as one line
    holding every field of the event, enough to replay it by hand.
    """

    def __init__(self, client: Publisher, topic_path: str, timeout_seconds: float) -> None:
        self.client = client
        self.topic_path = topic_path
        self.timeout_seconds = timeout_seconds

    def publish(self, event: ClickEvent) -> bool:
        try:
            future = self.client.publish(self.topic_path, event.encode(), campaign_id=str(event.campaign_id))
            future.result(timeout=self.timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - any failure must still redirect
            log.error(
                "click event not published",
                extra={"event": event.fields(), "topic": self.topic_path, "error": repr(exc)},
            )
            return False
        return True


def batch_settings(max_latency_seconds: float) -> pubsub_v1.types.BatchSettings:
    """Batching that lets concurrent clicks share a publish round trip."""
    return pubsub_v1.types.BatchSettings(max_messages=500, max_bytes=1_000_000, max_latency=max_latency_seconds)
