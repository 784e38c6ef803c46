"""Receiving click events from Pub/Sub, pushed or pulled, and the scheduled run.

Both entry points journal what they receive and apply the journal
(:mod:`shared.counting`). The scheduled run drains the pull subscription a
batch at a time (one journal write per batch), applies the journal, then does
the upkeep (:mod:`legacy_totals`, :mod:`deletions`, :mod:`backfill`, the
dead-letter check of :mod:`dead_letters`) and moves ``as_of``, all within
``AGGREGATE_MAX_SECONDS``. The
event-triggered function journals and applies each pushed message (a Publish call's events of one
partition) at once: a click is counted within a second, at about seven Firestore operations a message
(docs/counting.md, Cost).
"""

from __future__ import annotations

import base64
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from backfill import CampaignBackfill
from dead_letters import DeadLetterCheck, build_dead_letter_check
from deletions import DeletionSweeper, SweepResult
from google.api_core import exceptions as gexc
from google.cloud import firestore, pubsub_v1
from legacy_totals import RefreshResult, TotalsRefresher

from shared.config import AGGREGATE_MODE, AGGREGATE_PARTITIONS, PROJECT, ConfigError, Settings
from shared.counting import CALL_TIMEOUT_SECONDS, Applied, Applier, Delivery, Journal, Received, Written
from shared.errors import BadRequest
from shared.events import MAX_EVENTS_PER_MESSAGE, count_events
from shared.logs import get_logger
from shared.models import rfc3339
from shared.partitions import owner, partition_named, subscription_of
from shared.store import AS_OF, PARTITIONS_AS_OF, data_of, read_as_of, state_ref
from shared.utc import as_utc
from shared.visitors import SaltKeeper

log = get_logger("aggregate")

AGGREGATE_MODES = ("scheduled", "event", "both")

# Longest one pull waits for a message to arrive.
_PULL_WAIT_SECONDS = 2.0
_PULLS_AT_ONCE = 4
_PULL_MAX_MESSAGES = 1000  # Pub/Sub's limit for one pull
# A drain asks for messages as if each held as many events as those of its last round did on average
# (the most a message holds, to begin with), but never as if fewer than this, and for at least one a
# pull: as no message holds more than MAX_EVENTS_PER_MESSAGE, a batch gathers at most 50 times
# AGGREGATE_BATCH_SIZE events (and a message), and messages of one event still fill it in a few rounds.
_LEAST_EVENTS_PER_MESSAGE = 2
# While the drain runs, the apply step waits for this many journal entries (each up to
# AGGREGATE_BATCH_SIZE events) to commit together, and sees whether the drain is over this often.
_APPLY_ENTRIES = 20
_APPLY_IDLE_SECONDS = 0.5
# Events the drain hands the apply step to count from memory, at most (some 400 bytes each): past that
# (the apply step behind, taking what earlier runs left), their entries wait in the journal.
_MOST_ROWS_HELD = 200_000
# Shares of a run's budget: the drain stops pulling at the first, the apply step at the second;
# the rest is the upkeep's.
_DRAIN_SHARE = 0.8
_APPLY_SHARE = 0.9
# A lease outlives its run by the subscription's ack deadline, so that whatever a crashed
# run pulled is back on the subscription before another run may call the backlog empty.
_ACK_DEADLINE_SECONDS = 60.0
# Partitions' runs end at about the same time and each writes aggregator/state once: with a random
# wait between tries, as many tries as there are runs at once, and a few more, see every run through.
_AS_OF_SPARE_ATTEMPTS = 5
_AS_OF_RETRY_SECONDS = 0.05


class Subscriber(Protocol):
    def pull(self, *, request: dict[str, Any], timeout: float, retry: Any) -> Any: ...

    def acknowledge(self, *, subscription: str, ack_ids: list[str], timeout: float) -> None: ...

    def modify_ack_deadline(
        self, *, subscription: str, ack_ids: list[str], ack_deadline_seconds: int, timeout: float
    ) -> None: ...

    def get_subscription(self, *, subscription: str, timeout: float) -> Any: ...


class RetryLater(RuntimeError):
    """Raised by the push entry point so Pub/Sub redelivers what was not journaled."""


def receive_pushed(journal: Journal, applier: Applier, envelope: dict[str, Any]) -> Received:
    """Journal one Pub/Sub push message, as functions-framework hands it to a CloudEvent
    function, and count it at once; what cannot be counted now the scheduled run counts."""
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        message = {}
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (ValueError, TypeError):
        data = b""  # undecodable payload: poison, never retried
    received = journal.receive([Delivery(message_id, data)])
    if received.failed:
        raise RetryLater(f"message {message_id} not journaled; Pub/Sub will redeliver it")
    applier.apply_written(received.written, time.monotonic() + CALL_TIMEOUT_SECONDS)
    return received


@dataclass
class Drained:
    received: Received = field(default_factory=Received)
    pulled: int = 0
    """Events pulled."""
    messages: int = 0
    """Messages pulled: one for each Publish call's events of this partition."""
    foreign: int = 0
    """Events of other partitions, acked unjournaled: their own partition's subscription has them too."""
    caught_up: bool = False
    """A pull came back empty, or brought an event published after the drain's ``since``."""


@dataclass
class Drainer:
    """Pulls one partition's subscription in batches, journals each, acks only what is journaled
    (or belongs to another partition)."""

    journal: Journal
    subscriber: Subscriber
    subscription_path: str
    batch_size: int
    fill_seconds: float
    partitions: int
    _pulls: ThreadPoolExecutor = field(init=False, repr=False)
    _writes: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pulls = ThreadPoolExecutor(max_workers=_PULLS_AT_ONCE, thread_name_prefix="pull")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")

    def drain(self, since: datetime, deadline: float,
              journaled: Callable[[list[Written]], None] = lambda written: None) -> Drained:
        """Journal batches until caught up with ``since``, a journal write fails, or ``deadline``
        (monotonic) passes; each batch's journal entries, once written, are handed to ``journaled``
        (they are not kept in the result).

        A batch is written when it is full or ``fill_seconds`` after its first pull, so each
        message is acked seconds after its delivery, well within its ack deadline. Each batch is
        written and acked while the next one is pulled: one batch at a time in flight, so that a
        failed write stops the drain one batch later at most (that batch is handed back at once).
        """
        drained = Drained()
        writing: Future[Received] | None = None
        per_message = MAX_EVENTS_PER_MESSAGE  # what a message holds, as the drain reckons it
        while time.monotonic() + _PULL_WAIT_SECONDS <= deadline:
            messages, events, per_message = self._gather(deadline, per_message)
            if writing is not None:
                failed = self._settled(writing, drained).failed
                writing = None
                if failed:  # Firestore is unwell: the next run retries
                    self._settle([], [m.ack_id for m in messages])
                    break
            if not messages:
                drained.caught_up = self._answers()
                break
            drained.pulled += events
            drained.messages += len(messages)
            own, foreign = self._split(messages)
            drained.foreign += sum(count_events(m.message.data) for m in foreign)
            writing = self._writes.submit(self._journal, own, [m.ack_id for m in foreign], journaled)
            if max(m.message.publish_time.seconds for m in messages) >= since.timestamp():
                drained.caught_up = True
                break
        if writing is not None:
            self._settled(writing, drained)
        return drained

    def _journal(self, messages: list[Any], foreign: list[str],
                 journaled: Callable[[list[Written]], None]) -> Received:
        """Write one batch to the journal, hand its entries to ``journaled``, then ack what it holds
        (and the ``foreign`` ack ids) and hand back what it could not."""
        try:
            received = self.journal.receive([Delivery(m.message.message_id, m.message.data) for m in messages])
        except Exception:  # noqa: BLE001  # a fault of this code, not a failed write (the journal answers those)
            # Handled as a failed write: the batch goes back now, not at its ack deadline, and the drain
            # ends; what of it was written counts once all the same.
            log.exception("journal raised; the batch is handed back for redelivery", extra={"messages": len(messages)})
            received = Received(failed=[m.message.message_id for m in messages])
        if received.written:
            journaled(received.written)
            received.written = []  # a run's events are many: held until applied, not until the run ends
        ack_ids = {m.message.message_id: m.ack_id for m in messages}
        self._settle([ack_ids[i] for i in received.acked] + foreign, [ack_ids[i] for i in received.failed])
        return received

    def _split(self, messages: list[Any]) -> tuple[list[Any], list[Any]]:
        """This partition's messages, and the others'."""
        if self.partitions == 1:
            return messages, []  # every message is partition 0's: no attribute need be read
        own: list[Any] = []
        foreign: list[Any] = []
        for message in messages:
            mine = owner(message.message.attributes, self.partitions) == self.journal.partition
            (own if mine else foreign).append(message)
        return own, foreign

    @staticmethod
    def _settled(writing: Future[Received], drained: Drained) -> Received:
        received = writing.result()
        drained.received.merge(received)
        return received

    def _gather(self, deadline: float, per_message: int) -> tuple[list[Any], int, int]:
        """Messages (raw protobufs) holding about ``batch_size`` events, from pulls made
        ``_PULLS_AT_ONCE`` at a time, asked for as if each held ``per_message``; how many events
        they hold; and what a message holds as the last round found.

        A pull may return far fewer than asked (the emulator never more than
        100), and each is a round trip: one at a time, the drain would spend most
        of its time waiting on them. No pull starts after the fill window, or
        later than a whole pull wait before ``deadline`` (the caller sees to the
        first), and each may wait its
        whole ``_PULL_WAIT_SECONDS``: a pull cut short by its own timeout may
        have been handed messages that then stay out of reach until their ack
        deadline passes (and a pull answers at once when messages wait).
        """
        messages: list[Any] = []
        events = 0
        fill_until = time.monotonic() + self.fill_seconds
        while events < self.batch_size:
            now = time.monotonic()
            if messages and (now >= fill_until or now + _PULL_WAIT_SECONDS > deadline):
                break
            wanted = max(_PULLS_AT_ONCE, -(-(self.batch_size - events) // per_message))
            share = max(1, min(_PULL_MAX_MESSAGES, -(-wanted // _PULLS_AT_ONCE)))
            sizes = [min(share, wanted - i * share) for i in range(-(-wanted // share))][:_PULLS_AT_ONCE]
            pulls = list(self._pulls.map(self._pull, sizes))
            pulled = [m for answer in pulls for m in answer]
            if pulled:
                held = [count_events(m.message.data) for m in pulled]
                per_message = max(_LEAST_EVENTS_PER_MESSAGE, sum(held) // len(held))
                events += sum(held)
                messages += pulled
            if not all(pulls):
                break  # a pull came back empty: nothing more is waiting now
        return messages, events, per_message

    def _pull(self, max_messages: int) -> list[Any]:
        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription_path, "max_messages": max_messages},
                timeout=_PULL_WAIT_SECONDS,
                retry=None,
            )
        except gexc.DeadlineExceeded:
            return []
        # The raw protobufs: proto-plus wrappers cost more CPU per message than its journal write.
        return list(response._pb.received_messages)

    def _answers(self) -> bool:
        """Whether Pub/Sub answers at all: a pull that times out is how an empty backlog looks,
        and how a stalled Pub/Sub looks too."""
        try:
            self.subscriber.get_subscription(subscription=self.subscription_path, timeout=CALL_TIMEOUT_SECONDS)
        except gexc.GoogleAPIError as exc:
            log.warning("Pub/Sub did not answer; the backlog may not be empty", extra={"error": repr(exc)})
            return False
        return True

    def _settle(self, done: list[str], failed: list[str]) -> None:
        try:
            if done:
                self.subscriber.acknowledge(subscription=self.subscription_path, ack_ids=done,
                                            timeout=CALL_TIMEOUT_SECONDS)
            if failed:
                self.subscriber.modify_ack_deadline(subscription=self.subscription_path, ack_ids=failed,
                                                    ack_deadline_seconds=0, timeout=CALL_TIMEOUT_SECONDS)
        except gexc.GoogleAPIError as exc:
            # Unacked messages come back after their deadline and are counted once all the same.
            log.warning("ack outcome unknown; the events may be delivered again",
                        extra={"error": repr(exc), "messages": len(done) + len(failed)})


class Lease:
    """``aggregator/lease`` (``lease-p{n}`` for partition n > 0): at most one scheduled run drains a
    partition at a time, so that when it finds the backlog empty no other run holds messages it
    pulled and has not yet journaled."""

    def __init__(self, db: firestore.Client, partition: int) -> None:
        self.ref = db.collection("aggregator").document(f"lease-p{partition}" if partition else "lease")
        self.db = db
        self.holder = secrets.token_hex(8)
        self._update_time: Any = None

    def acquire(self, seconds: float) -> bool:
        snapshot = self.ref.get(timeout=CALL_TIMEOUT_SECONDS)
        now = datetime.now(timezone.utc)
        if snapshot.exists and data_of(snapshot).get("until", now) > now:
            return False
        lease = {"holder": self.holder, "until": now + timedelta(seconds=seconds)}
        batch = self.db.batch()
        if snapshot.exists:
            batch.update(self.ref, lease, option=self.db.write_option(last_update_time=snapshot.update_time))
        else:
            batch.create(self.ref, lease)
        try:
            self._update_time = batch.commit(timeout=CALL_TIMEOUT_SECONDS)[0].update_time
        except (gexc.FailedPrecondition, gexc.AlreadyExists):
            return False  # another run took it meanwhile
        return True

    def release(self) -> None:
        if self._update_time is None:
            return
        try:
            self.ref.delete(option=self.db.write_option(last_update_time=self._update_time),
                            timeout=CALL_TIMEOUT_SECONDS)
        except gexc.GoogleAPIError as exc:
            log.warning("lease not released; it expires by itself", extra={"error": repr(exc)})
        self._update_time = None


def advance_as_of(db: firestore.Client, moment: datetime, partition: int, partitions: int) -> datetime | None:
    """Record that ``partition`` has counted every click published before ``moment``, and move
    ``aggregator/state.as_of`` to the earliest such moment of all ``partitions``, unless it is
    already later; returns what ``as_of`` is then (None before every partition has run once)."""
    ref = state_ref(db)
    for attempt in range(partitions + _AS_OF_SPARE_ATTEMPTS):
        if attempt:
            time.sleep(random.uniform(0, _AS_OF_RETRY_SECONDS * attempt))
        snapshot = ref.get(timeout=CALL_TIMEOUT_SECONDS)
        state = data_of(snapshot) if snapshot.exists else {}
        stored: datetime | None = state.get(AS_OF)
        marks = dict(state.get(PARTITIONS_AS_OF) or {})
        mine = marks.get(str(partition))
        if mine is not None and mine >= moment:
            return as_utc(stored) if stored is not None else None
        marks[str(partition)] = moment
        reached = [marks.get(str(n)) for n in range(partitions)]
        as_of = stored
        if None not in reached:
            earliest = min(mark for mark in reached if mark is not None)
            as_of = earliest if stored is None or earliest > stored else stored
        update = {PARTITIONS_AS_OF: marks, AS_OF: as_of}
        try:
            if snapshot.exists:
                ref.update(update, option=db.write_option(last_update_time=snapshot.update_time),
                           timeout=CALL_TIMEOUT_SECONDS)
            else:
                ref.create(update, timeout=CALL_TIMEOUT_SECONDS)
        except (gexc.FailedPrecondition, gexc.AlreadyExists):
            continue  # another run moved it meanwhile; read again
        return as_utc(as_of) if as_of is not None else None
    log.warning("as_of not moved: other runs kept changing it; the next run moves it",
                extra={"partition": partition})
    return read_as_of(db)


@dataclass
class RunReport:
    partition: int
    started: datetime
    drained: Drained | None
    """None when this run did not drain: event mode, or another run holds the lease."""
    applied: Applied
    refresh: RefreshResult
    sweep: SweepResult
    backfilled: int
    """Campaigns given the fields the list filters on (``targets``, ``status``) by this run."""
    salts_made: int
    """Visitor salts (today's, tomorrow's) this run made."""
    as_of: datetime | None
    """``aggregator/state.as_of`` after this run; it moved to ``started`` if the run was complete."""
    seconds: float
    dead_letters: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.drained is not None and bool(self.drained.received.failed)

    def summary(self) -> dict[str, Any]:
        received = self.drained.received if self.drained else Received()
        return {
            "partition": self.partition,
            "pulled": self.drained.pulled if self.drained else 0,
            "messages": self.drained.messages if self.drained else 0,
            "foreign": self.drained.foreign if self.drained else 0,
            "drained": self.drained is not None,
            "caught_up": bool(self.drained and self.drained.caught_up),
            "journaled": received.journaled, "failed": len(received.failed),
            "counted": self.applied.counted, "duplicates": self.applied.duplicates,
            "poison": received.poison + self.applied.poison,
            "journal_entries_applied": self.applied.entries, "journal_complete": self.applied.complete,
            "totals_refreshed": self.refresh.campaigns, "totals_complete": self.refresh.complete,
            "deleted_documents": self.sweep.deleted, "deletions_done": len(self.sweep.campaigns),
            "campaigns_backfilled": self.backfilled,
            "visitor_salts_made": self.salts_made,
            **self.dead_letters,
            "seconds": round(self.seconds, 3),
            "as_of": rfc3339(self.as_of) if self.as_of else None,
        }


@dataclass
class ScheduledRun:
    """The scheduled aggregate run of one partition: drain (unless in event mode), apply, ``as_of``,
    and in partition 0 the upkeep."""

    partition: int
    partitions: int
    drainer: Drainer | None
    applier: Applier
    refresher: TotalsRefresher
    sweeper: DeletionSweeper
    backfill: CampaignBackfill
    dead_letters: DeadLetterCheck
    salts: SaltKeeper
    max_seconds: float

    def run(self) -> RunReport:
        started, began = datetime.now(timezone.utc), time.monotonic()
        db = self.applier.db
        drained, lease = None, Lease(db, self.partition)
        draining = threading.Event()
        journaled = _Held(_MOST_ROWS_HELD)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="apply") as pool:
            # The apply step runs beside the drain, so that a backlog is counted while it is pulled.
            applying = pool.submit(self._apply_until_drained, started, draining, journaled,
                                   began + _APPLY_SHARE * self.max_seconds)
            try:
                if self.drainer is not None and lease.acquire(self.max_seconds + _ACK_DEADLINE_SECONDS):
                    drained = self.drainer.drain(started, began + _DRAIN_SHARE * self.max_seconds, journaled.offer)
                    # Not released when the drain raised: messages it pulled may be out until their ack
                    # deadline, and the lease, outliving it, keeps another run from calling them counted.
                    lease.release()
            finally:
                draining.set()  # also when the drain failed: the apply step then ends at once
            applied = applying.result()
        deadline = began + self.max_seconds
        upkeep = self.partition == 0  # the rest is not the click stream's, so one partition does it
        salts_made = self._keep_salts(started) if upkeep else 0
        refresh = self.refresher.refresh(deadline) if upkeep else RefreshResult(complete=True)
        sweep = self.sweeper.sweep(deadline) if upkeep else SweepResult()
        complete = applied.complete and refresh.complete and (
            self.drainer is None or (drained is not None and drained.caught_up and not drained.received.failed))
        as_of = advance_as_of(db, started, self.partition, self.partitions) if complete else read_as_of(db)
        dead_letters = self.dead_letters.check(deadline) if upkeep else {}
        # Last: after an upgrade it may take what is left of the budget for a few runs.
        backfilled = self.backfill.run(deadline) if upkeep and time.monotonic() < deadline else 0
        return RunReport(self.partition, started, drained, applied, refresh, sweep, backfilled, salts_made, as_of,
                         time.monotonic() - began, dead_letters)

    def _keep_salts(self, now: datetime) -> int:
        """Today's and tomorrow's visitor salts, made if missing: the track function only reads them."""
        try:
            return len(self.salts.keep_ahead(now))
        except gexc.GoogleAPIError as exc:
            log.error("visitor salts not made; the next run tries again", extra={"error": repr(exc)})
            return 0

    def _apply_until_drained(self, started: datetime, drained: threading.Event, journaled: _Held,
                             deadline: float) -> Applied:
        """Apply what earlier runs left in the journal, oldest first; then the entries the drain writes,
        as it writes them and without reading them back, ``_APPLY_ENTRIES`` to a commit at least;
        once the drain is over, the rest of them, then whatever else the journal holds (entries
        whose apply failed, or the event-triggered function's)."""
        total = self.applier.apply(deadline, partition=self.partition, before=started)
        pending: list[Written] = []
        while not drained.is_set() and time.monotonic() < deadline:
            pending += journaled.take(_APPLY_IDLE_SECONDS)
            if len(pending) >= _APPLY_ENTRIES:
                total.merge(self.applier.apply_written(pending, deadline))
                pending = []
        # A drain hands over its entries before it returns: once it is over, all are held.
        pending += journaled.take(0)
        total.merge(self.applier.apply_written(pending, deadline))
        rest = self.applier.apply(deadline, partition=self.partition)
        total.merge(rest)
        total.complete = rest.complete
        return total


class _Held:
    """The journal entries a drain hands the apply step, up to ``most_rows`` events: past that, they wait
    in the journal for the apply step's last pass."""

    def __init__(self, most_rows: int) -> None:
        self._entries: list[Written] = []
        self._rows = 0
        self._most_rows = most_rows
        self._changed = threading.Condition()

    def offer(self, written: list[Written]) -> None:
        rows = sum(len(entry.rows) for entry in written)
        with self._changed:
            if self._rows + rows <= self._most_rows:
                self._entries += written
                self._rows += rows
                self._changed.notify()

    def take(self, wait_seconds: float) -> list[Written]:
        """Every entry held, once there is one or ``wait_seconds`` have passed."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._entries), timeout=wait_seconds)
            entries, self._entries, self._rows = self._entries, [], 0
            return entries


def partition_asked(raw: str, partitions: int) -> int:
    """The partition a scheduled run was asked for, ``?partition=n``."""
    partition = partition_named(raw, partitions)
    if partition is None:
        raise BadRequest(f"partition must be a number from 0 to {partitions - 1} ({AGGREGATE_PARTITIONS}), "
                         f"not {raw!r}")
    return partition


def build_applier(settings: Settings) -> Applier:
    return Applier(firestore.Client(project=settings.project), timedelta(days=settings.redelivery_horizon_days))


def build_drainer(settings: Settings, journal: Journal) -> Drainer:
    """The drain of ``journal``'s partition."""
    subscriber = pubsub_v1.SubscriberClient()
    return Drainer(
        journal,
        subscriber,
        subscriber.subscription_path(settings.required(PROJECT),
                                     subscription_of(settings.clicks_subscription, journal.partition)),
        settings.aggregate_batch_size,
        settings.aggregate_fill_seconds,
        settings.aggregate_partitions,
    )


def build_scheduled_run(settings: Settings, applier: Applier, partition: int) -> ScheduledRun:
    if settings.aggregate_mode not in AGGREGATE_MODES:
        raise ConfigError(f"{AGGREGATE_MODE} must be one of {', '.join(AGGREGATE_MODES)}, "
                          f"not {settings.aggregate_mode!r}")
    db = applier.db
    return ScheduledRun(
        partition,
        settings.aggregate_partitions,
        None if settings.aggregate_mode == "event" else build_drainer(settings, Journal(db, partition=partition)),
        applier,
        TotalsRefresher(db, settings.counter_shards),
        DeletionSweeper(db, timedelta(seconds=settings.delete_grace_seconds), settings.delete_max_documents),
        CampaignBackfill(db),
        build_dead_letter_check(settings),
        SaltKeeper(db, CALL_TIMEOUT_SECONDS),
        settings.aggregate_max_seconds,
    )
