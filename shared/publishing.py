"""Publishing click events to Pub/Sub: group commit, a bounded wait and a breaker.

One :class:`GroupPublisher` per instance, over the official async client. At
most ``max_in_flight`` Publish calls run at once; the clicks that arrive while
they do go into the next one, so under load a round trip carries many events
and a lone click costs one round trip. A call's events for one partition go
out as one message (:func:`shared.events.join_events`), so that the aggregator
pulls, acks or is pushed one message for them all. Each click waits for its own message id, but at
most ``wait_seconds``: a Cloud Function may lose its CPU once it has answered,
so it waits for the outcome, yet a stalled Pub/Sub must not hold the redirect.

An event whose publish is not confirmed is logged at ERROR as one JSON line
holding every field, by whoever knows that last: the click, when its wait
ends (outcome ``unknown`` when the call is still running or timed out, since
it may yet land; ``failed`` when Pub/Sub refused it), or the publisher, for
events no click waits on. This is the log contract ``tools.replay`` reads:
logger ``o7tracker.publishing``, fields ``outcome``, ``click_id``, ``event``
(every field), ``topic`` and ``error``.

After :data:`BREAKER_THRESHOLD` unconfirmed clicks in a row, clicks stop
waiting (their events are still published, and logged if that fails) until a
publish is confirmed again: a Pub/Sub outage costs users a few waits, not one
per click.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from typing import Final, Literal

from google.api_core import exceptions as gexc
from google.api_core.retry_async import AsyncRetry, if_exception_type
from google.pubsub_v1 import PublisherAsyncClient
from google.pubsub_v1.types import PublishRequest

from shared.events import MAX_EVENTS_PER_MESSAGE, MAX_MESSAGE_BYTES, ClickEvent, join_events
from shared.logs import get_logger
from shared.partitions import PARTITION_ATTRIBUTE, partition_of

log = get_logger("publishing")

Outcome = Literal["failed", "unknown"]
FAILED: Final = "failed"  # never accepted by Pub/Sub: replaying it is needed
UNKNOWN: Final = "unknown"  # may have landed: replaying it is harmless (counted once)
MESSAGES: Final[dict[str, str]] = {
    FAILED: "click event publish failed",
    UNKNOWN: "click event publish outcome unknown",
}

BREAKER_THRESHOLD: Final = 3
# Pub/Sub refuses a Publish request over 10 MB; events are at most ~1.3 KB.
MAX_REQUEST_BYTES: Final = 9_000_000

# Pub/Sub's own list of publish errors worth another attempt.
TRANSIENT: Final = (
    gexc.Aborted, gexc.Cancelled, gexc.DeadlineExceeded, gexc.InternalServerError,
    gexc.ResourceExhausted, gexc.ServiceUnavailable, gexc.Unknown,
)

# Raw protobuf classes: building a request through proto-plus costs more than
# the rest of a click (python -m bench.hotpath, py-spy).
_PublishRequestPb: Final = PublishRequest.pb()


class BufferFull(Exception):
    """The publish buffer is at its bound: the event was never handed to Pub/Sub."""


class NotConfirmed(Exception):
    """A click's wait ended before Pub/Sub answered; the publish goes on and may land."""


class ShutDown(Exception):
    """The instance stopped while the Publish call was running: it may have landed."""


class NotSent(Exception):
    """The instance stopped before the event was handed to Pub/Sub."""


def outcome_of(error: BaseException) -> Outcome:
    """``failed`` only when the event certainly was not published."""
    if isinstance(error, (BufferFull, NotSent)):
        return FAILED
    if isinstance(error, gexc.ClientError) and not isinstance(error, gexc.Cancelled):
        return FAILED  # refused by Pub/Sub (no such topic, no permission, malformed)
    return UNKNOWN  # deadline, unavailable, retries exhausted: it may have landed


def log_unpublished(event: ClickEvent, topic: str, outcome: Outcome, error: BaseException) -> None:
    log.error(
        MESSAGES[outcome],
        extra={"outcome": outcome, "click_id": event.click_id, "event": event.fields(),
               "topic": topic, "error": repr(error)},
    )


def packed(partitions: Sequence[int], encoded: Sequence[bytes]) -> tuple[list[tuple[int, bytes]], list[int]]:
    """The messages of one Publish call, as (partition, data): the events of a partition together, at most
    ``MAX_EVENTS_PER_MESSAGE`` and ``MAX_MESSAGE_BYTES`` a message; and for each event, its message's index."""
    taking: dict[int, int] = {}  # partition -> index of its message that takes more events
    messages: list[tuple[int, list[bytes]]] = []
    sizes: list[int] = []
    message_of: list[int] = []
    for partition, data in zip(partitions, encoded, strict=True):
        index = taking.get(partition)
        if index is None or len(messages[index][1]) >= MAX_EVENTS_PER_MESSAGE or (
                sizes[index] + len(data) + 1 > MAX_MESSAGE_BYTES):
            index = taking[partition] = len(messages)
            messages.append((partition, []))
            sizes.append(0)
        messages[index][1].append(data)
        sizes[index] += len(data) + 1
        message_of.append(index)
    return [(partition, join_events(events)) for partition, events in messages], message_of


class _Batch:
    """The events of one Publish call, and what became of it.

    Clicks wait on ``over`` rather than on a future each: it is set when the
    call settles, or when the wait of the batch's first waiting click runs
    out, which bounds every later click's wait too.
    """

    __slots__ = ("events", "data", "size", "detached", "over", "timer", "sent", "message_ids", "message_of",
                 "error")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.events: list[ClickEvent] = []
        self.data: list[bytes] = []
        self.size = 0
        # Events no click waits on: the publisher logs them if they fail.
        self.detached: list[ClickEvent] = []
        self.over: asyncio.Future[None] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.sent = False
        self.message_ids: Sequence[str] | None = None
        self.message_of: list[int] = []
        """For each event, the index of the message that carries it."""
        self.error: BaseException | None = None

    def end_wait(self) -> None:
        if not self.over.done():
            self.over.set_result(None)


class GroupPublisher:
    """Publishes click events in group commits; see the module docstring."""

    def __init__(
        self,
        client: PublisherAsyncClient,
        topic: str,
        *,
        wait_seconds: float,
        deadline_seconds: float,
        batch_max_messages: int,
        max_in_flight: int,
        buffer_max_messages: int,
        buffer_max_bytes: int,
        partitions: int,
    ) -> None:
        self.client = client
        self.topic = topic
        self.partitions = partitions
        # Each message names its partition (shared/partitions.py); the names made once.
        self._partition_names = [str(partition) for partition in range(partitions)]
        self.wait_seconds = wait_seconds
        self.deadline_seconds = deadline_seconds
        self.batch_max_messages = batch_max_messages
        self.max_in_flight = max_in_flight
        self.buffer_max_messages = buffer_max_messages
        self.buffer_max_bytes = buffer_max_bytes
        self.retry = AsyncRetry(predicate=if_exception_type(*TRANSIENT), initial=0.1, maximum=5.0,
                                multiplier=2.0, timeout=deadline_seconds)
        self.unconfirmed_in_a_row = 0
        # Batches not sent yet, oldest first; the last one takes new events.
        self._waiting: deque[_Batch] = deque()
        self._in_flight: set[_Batch] = set()
        self._messages = 0
        self._bytes = 0
        # Held here so a running Publish call is never garbage collected.
        self._senders: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def waits(self) -> bool:
        """Whether clicks wait for their confirmation (the breaker is closed)."""
        return self.unconfirmed_in_a_row < BREAKER_THRESHOLD

    @property
    def buffered(self) -> tuple[int, int]:
        """Events and bytes waiting for or in a Publish call."""
        return self._messages, self._bytes

    async def publish(self, event: ClickEvent) -> str | None:
        """The event's message id once confirmed, or None when it was not, within the wait.

        Never raises for a publish problem: an unconfirmed event is logged.
        """
        data = event.encode()
        if self._messages >= self.buffer_max_messages or self._bytes + len(data) > self.buffer_max_bytes:
            self.unconfirmed_in_a_row += 1
            log_unpublished(event, self.topic, FAILED, BufferFull(
                f"{self._messages} events ({self._bytes} bytes) already wait for Pub/Sub"))
            return None
        wait = self.waits
        batch = self._batch_for(len(data), wait)
        index = len(batch.events)
        batch.events.append(event)
        batch.data.append(data)
        batch.size += len(data)
        self._messages += 1
        self._bytes += len(data)
        self._send_next()
        if not wait:
            batch.detached.append(event)
            return None
        if batch.timer is None:
            batch.timer = asyncio.get_running_loop().call_later(self.wait_seconds, batch.end_wait)
        try:
            await batch.over
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Another waiter was cancelled and took the shared signal with it;
            # this click's outcome is read as at the end of its wait.
        if batch.message_ids is not None:
            self.unconfirmed_in_a_row = 0
            return batch.message_ids[batch.message_of[index]]
        self.unconfirmed_in_a_row += 1
        error = batch.error or NotConfirmed(f"no answer from Pub/Sub within {self.wait_seconds}s; still trying")
        log_unpublished(event, self.topic, outcome_of(error), error)
        return None

    def _batch_for(self, size: int, wait: bool) -> _Batch:
        """The unsent batch this event joins, opening a new one when none fits."""
        if self._waiting:
            batch = self._waiting[-1]
            if (len(batch.events) < self.batch_max_messages and batch.size + size <= MAX_REQUEST_BYTES
                    and not (wait and batch.over.done())):
                return batch
        batch = _Batch(asyncio.get_running_loop())
        self._waiting.append(batch)
        return batch

    def _send_next(self) -> None:
        """Start a Publish call for each waiting batch while fewer than ``max_in_flight`` are running.

        The call starts on the loop's next turn: clicks handled before then
        still join its batch.
        """
        loop = asyncio.get_running_loop()
        # Counted by batch: a finishing call leaves _in_flight before it starts the next,
        # while its task is still among the senders.
        while self._waiting and len(self._in_flight) < self.max_in_flight and not self._closing:
            batch = self._waiting.popleft()
            self._in_flight.add(batch)
            # A context of its own: what it logs belongs to no one click's request.
            sender = loop.create_task(self._send(batch), context=contextvars.Context())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _send(self, batch: _Batch) -> None:
        batch.sent = True
        request = _PublishRequestPb(topic=self.topic)
        messages, batch.message_of = packed(
            [partition_of(event.producer, self.partitions) for event in batch.events], batch.data)
        for partition, data in messages:
            # Set through the map: a message built with an attributes dict costs three times as much.
            request.messages.add(data=data).attributes[PARTITION_ATTRIBUTE] = self._partition_names[partition]
        try:
            response = await self.client.publish(
                request=PublishRequest.wrap(request), retry=self.retry, timeout=self.deadline_seconds)
        except asyncio.CancelledError:
            batch.error = ShutDown("the instance stopped during the Publish call")
            self._log_detached(batch, UNKNOWN, batch.error)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is logged, event by event
            batch.error = exc
            self._log_detached(batch, outcome_of(exc), exc)
        else:
            batch.message_ids = response.message_ids
            self.unconfirmed_in_a_row = 0
        finally:
            self._in_flight.discard(batch)
            self._settle(batch)
        self._send_next()

    def _settle(self, batch: _Batch) -> None:
        self._messages -= len(batch.events)
        self._bytes -= batch.size
        if batch.timer is not None:
            batch.timer.cancel()
        batch.end_wait()

    def _log_detached(self, batch: _Batch, outcome: Outcome, error: BaseException) -> None:
        """Log the events no click waits on; waiting clicks log their own."""
        for event in batch.detached:
            log_unpublished(event, self.topic, outcome, error)

    async def aclose(self) -> None:
        """At shutdown: queued events get one more wait to go out, then what is left is logged.

        Never hangs: Publish calls still running after ``wait_seconds`` are cancelled.
        """
        deadline = asyncio.get_running_loop().time() + self.wait_seconds
        while self._senders and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.wait(set(self._senders), timeout=left)
        self._closing = True
        for sender in list(self._senders):
            sender.cancel()
            with suppress(asyncio.CancelledError):
                await sender
        while self._waiting:
            batch = self._waiting.popleft()
            batch.error = NotSent("the instance stopped before the Publish call")
            self._log_detached(batch, FAILED, batch.error)
            self._settle(batch)
