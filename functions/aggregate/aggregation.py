"""Folding click events into counters, from a push or from a pulled backlog.

Pick the entry point by traffic: the event-triggered function counts each
click within a second of the click but costs one commit per click, so it
suits campaigns well under one click per second per counter shard; the
scheduled drain folds up to ``AGGREGATE_BATCH_SIZE`` events per commit round,
so a hot campaign costs one write per shard per round whatever its click
rate. Both share :class:`shared.counting.ClickFolder` and can run together.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from google.cloud import firestore, pubsub_v1

from shared.config import PROJECT, Settings
from shared.counting import ClickFolder, Delivery, FoldResult
from shared.logs import get_logger

log = get_logger("aggregate")

# An empty backlog answers an open pull only when this runs out.
_PULL_WAIT_SECONDS = 2.0


class Subscriber(Protocol):
    def pull(self, *, request: dict[str, Any], timeout: float, retry: Any) -> Any: ...

    def acknowledge(self, *, subscription: str, ack_ids: list[str]) -> None: ...

    def modify_ack_deadline(self, *, subscription: str, ack_ids: list[str], ack_deadline_seconds: int) -> None: ...


class RetryLater(RuntimeError):
    """Raised by the push entry point so Pub/Sub redelivers what was not committed."""


def fold_pushed(folder: ClickFolder, envelope: dict[str, Any]) -> FoldResult:
    """Fold one Pub/Sub push message, as functions-framework hands it to a CloudEvent function."""
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        message = {}
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (ValueError, TypeError):
        data = b""  # undecodable payload: folded as poison below, never retried
    result = folder.fold([Delivery(message_id, data)])
    if result.failed:
        raise RetryLater(f"message {message_id} not committed; Pub/Sub will redeliver it")
    return result


@dataclass
class Drainer:
    """Pulls the subscription's backlog in batches, folds each, acks only what is committed.

    A failed commit hands its messages straight back (ack deadline 0) and ends
    the drain: Firestore is unwell, and the next scheduled run retries them.
    """

    folder: ClickFolder
    subscriber: Subscriber
    subscription_path: str
    batch_size: int
    max_seconds: float

    def drain(self) -> tuple[FoldResult, int]:
        """Fold until the backlog is empty or the time budget is spent; returns (result, pulled)."""
        total, pulled = FoldResult(), 0
        deadline = time.monotonic() + self.max_seconds
        backlog_left = True
        while backlog_left and time.monotonic() < deadline:
            messages, backlog_left = self._pull_batch()
            if not messages:
                break
            pulled += len(messages)
            ack_ids = {m.message.message_id: m.ack_id for m in messages}
            result = self.folder.fold([Delivery(m.message.message_id, m.message.data) for m in messages])
            if result.acked:
                self.subscriber.acknowledge(
                    subscription=self.subscription_path, ack_ids=[ack_ids[i] for i in result.acked]
                )
            total.merge(result)
            if result.failed:
                self.subscriber.modify_ack_deadline(
                    subscription=self.subscription_path,
                    ack_ids=[ack_ids[i] for i in result.failed],
                    ack_deadline_seconds=0,
                )
                break
        return total, pulled

    def _pull_batch(self) -> tuple[list[Any], bool]:
        """Up to ``batch_size`` messages, over several pulls if need be, and whether more may wait.

        A pull may return far fewer than asked (the emulator never more than
        100); folding each small pull alone would multiply the commits, and so
        the writes per counter document, for the same clicks.
        """
        messages: list[Any] = []
        while len(messages) < self.batch_size:
            pulled = self._pull(self.batch_size - len(messages))
            if not pulled:
                return messages, False
            messages += pulled
        return messages, True

    def _pull(self, max_messages: int) -> list[Any]:
        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription_path, "max_messages": max_messages},
                timeout=_PULL_WAIT_SECONDS,
                retry=None,
            )
        except gexc.DeadlineExceeded:
            return []
        return list(response.received_messages)


def build_folder(settings: Settings) -> ClickFolder:
    return ClickFolder(
        firestore.Client(project=settings.project),
        settings.counter_shards,
        timedelta(days=settings.dedup_retention_days),
    )


def build_drainer(settings: Settings, folder: ClickFolder) -> Drainer:
    subscriber = pubsub_v1.SubscriberClient()
    return Drainer(
        folder,
        subscriber,
        subscriber.subscription_path(settings.required(PROJECT), settings.clicks_subscription),
        settings.aggregate_batch_size,
        settings.aggregate_max_seconds,
    )
