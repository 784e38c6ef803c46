"""Click events on the dead-letter subscription: counting them, and moving them back.

Pub/Sub moves a click event from the drain's pull subscription to the
dead-letter topic after 10 deliveries that were never acknowledged: its
commit kept failing, or the run folding it kept dying. Its subscription
(``DEAD_LETTER_SUBSCRIPTION``) keeps it for 7 days. The scheduled run counts
that backlog (:func:`dead_letter_backlog`) to report it, and
``python -m tools.dead_letters`` counts it and, once the cause is fixed,
publishes the events back to the click topic (:func:`requeue`). The
aggregator counts a ``click_id`` once, so an event that did count after all
is not counted again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from shared.logs import get_logger

log = get_logger("dead_letters")

# An empty subscription answers an open pull only when this runs out.
PULL_WAIT_SECONDS = 2.0
# Messages moved per round: published together, then acknowledged together.
REQUEUE_CHUNK = 100
# Ack ids per acknowledge or modify call, well inside the request size limit.
ACK_IDS_PER_CALL = 500
# Pub/Sub's longest lease.
MAX_LEASE_SECONDS = 600


def dead_letter_backlog(subscriber: pubsub_v1.SubscriberClient, subscription_path: str, cap: int,
                        wait: float = PULL_WAIT_SECONDS) -> tuple[int, bool]:
    """How many messages wait on the subscription, counted up to ``cap``, and whether the count stopped there.

    The messages are pulled and held until the count is done, so none is
    counted twice, then all handed back (ack deadline 0): they stay where they
    were, to be delivered again at once. A message whose lease ran out during
    the count comes again and is still counted once.
    """
    ack_ids: dict[str, str] = {}  # message id -> its latest ack id
    try:
        while len(ack_ids) < cap:
            received = pull(subscriber, subscription_path, cap - len(ack_ids), wait)
            if not received:
                break
            ack_ids.update((m.message.message_id, m.ack_id) for m in received)
    finally:
        hand_back(subscriber, subscription_path, ack_ids.values())
    return min(len(ack_ids), cap), len(ack_ids) >= cap


@dataclass
class RequeueResult:
    requeued: int = 0  # published again and acknowledged
    failed: int = 0  # publishes refused or not confirmed in time; handed back, still waiting


def requeue(
    subscriber: pubsub_v1.SubscriberClient,
    subscription_path: str,
    publisher: pubsub_v1.PublisherClient,
    topic_path: str,
    limit: int,
    timeout_seconds: float,
) -> RequeueResult:
    """Publish up to ``limit`` dead-lettered messages to the topic, each with its data and attributes.

    A message is acknowledged only once its publish is confirmed. One whose
    publish is refused, or not confirmed within ``timeout_seconds``, is handed
    back and stays; the move stops there, as the topic is unwell.
    """
    result = RequeueResult()
    lease_seconds = min(MAX_LEASE_SECONDS, int(timeout_seconds) + 30)
    while result.requeued < limit:
        received = pull(subscriber, subscription_path, min(REQUEUE_CHUNK, limit - result.requeued))
        if not received:
            break
        # Held past the publishes' wait, so no message is delivered again meanwhile.
        _modify(subscriber, subscription_path, [m.ack_id for m in received], lease_seconds)
        published = [
            (m, publisher.publish(topic_path, m.message.data, timeout=timeout_seconds, **dict(m.message.attributes)))
            for m in received
        ]
        confirmed, unconfirmed = [], []
        deadline = time.monotonic() + timeout_seconds
        for message, future in published:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - any refusal or timeout leaves the message where it was
                unconfirmed.append(message.ack_id)
                log.error("dead-lettered click event not requeued; it stays",
                          extra={"message_id": message.message.message_id, "topic": topic_path, "error": repr(exc)})
            else:
                confirmed.append(message.ack_id)
        for ids in _chunks(confirmed):
            subscriber.acknowledge(subscription=subscription_path, ack_ids=ids)
        hand_back(subscriber, subscription_path, unconfirmed)
        result.requeued += len(confirmed)
        result.failed += len(unconfirmed)
        if unconfirmed:
            break
    return result


def pull(subscriber: pubsub_v1.SubscriberClient, subscription_path: str, max_messages: int,
         wait: float = PULL_WAIT_SECONDS) -> list[Any]:
    """Up to ``max_messages`` messages; none when the subscription stays empty for ``wait`` seconds."""
    try:
        response = subscriber.pull(
            request={"subscription": subscription_path, "max_messages": max_messages},
            timeout=wait,
            retry=None,
        )
    except gexc.DeadlineExceeded:
        return []
    return list(response.received_messages)


def hand_back(subscriber: pubsub_v1.SubscriberClient, subscription_path: str, ack_ids: Iterable[str]) -> None:
    """Give up the leases: the messages are delivered again at once, as if never pulled."""
    _modify(subscriber, subscription_path, ack_ids, 0)


def _modify(subscriber: pubsub_v1.SubscriberClient, subscription_path: str, ack_ids: Iterable[str],
            seconds: int) -> None:
    for ids in _chunks(ack_ids):
        subscriber.modify_ack_deadline(subscription=subscription_path, ack_ids=ids, ack_deadline_seconds=seconds)


def _chunks(ack_ids: Iterable[str]) -> list[list[str]]:
    ids = list(ack_ids)
    return [ids[i:i + ACK_IDS_PER_CALL] for i in range(0, len(ids), ACK_IDS_PER_CALL)]
