"""Exactly-once counting of click events, at a Firestore cost that does not grow with each click.

Two steps, each one atomic commit:

1. **Journal** (:class:`Journal`). Whoever receives events from Pub/Sub (the
   scheduled drain a batch at a time, the event-triggered function one at a
   time) decodes them and writes them as one document ``journal/{id}``, then
   acks them. Poison is acked without being written. A crash between the write
   and the ack only makes Pub/Sub deliver the events again, into another entry,
   so the journal may hold an event more than once: step 2 sees to that.

2. **Apply** (:class:`Applier`). The scheduled run reads journal entries and,
   for their producers, ``producers/{id}``: the sequence numbers already
   counted, as merged ranges (:class:`Ledger`). In one commit it adds the new
   clicks to each campaign's ``counts`` and to its day documents' hourly
   ``counts`` (``Increment``), adds their visitor keys to the day documents'
   hourly sketches of distinct visitors (``visitors.hHH.<Platform>``,
   :mod:`shared.sketches`), records their numbers in the producers' ranges
   and deletes the entries. Producer documents are written on condition that
   they are as read (or still absent) and entries deleted on condition that
   they still exist, so two appliers racing cannot both count an event: the
   later commit fails whole, and reads again. A sketch cannot be incremented
   in place: the day documents whose sketches a commit changes are read first
   and written on condition that they are as read (or still absent), so two
   appliers racing cannot lose each other's visitors either.

So a redelivered, republished, replayed, reordered or concurrently received
event is counted once, and per commit the writes are one per campaign, per
campaign day and per producer touched, whatever the number of clicks.

Events of schema version 1 (before producers) are deduplicated as they were
then, by a record ``clicks/{click_id}`` read before and created in the same
commit, so that events in flight across the upgrade still count once.

**The redelivery horizon.** An event whose ``ts`` is older than
``REDELIVERY_HORIZON_DAYS`` before the apply, or more than an hour ahead, is
poison. That bound is what lets a producer's ranges stay short: a gap between
two ranges whose upper range began before the horizon (less the hour a
producer's clock may be off) can only hold events too old to count, so the
ranges are merged over it; and a producer's document expires (TTL on
``expire_at``) a day after its newest event leaves the horizon.
"""

from __future__ import annotations

import bisect
import json
import secrets
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.errors import InvalidEvent
from shared.events import ClickEvent, split_events
from shared.logs import get_logger
from shared.platforms import BOT_FIELD, INACTIVE_FIELD, INACTIVE_PLATFORM_FIELDS, PLATFORM_FIELDS, TOTAL_FIELD
from shared.sketches import MAX_SKETCH_BYTES, add_visitors
from shared.store import (
    COUNTS,
    DOCUMENT_NAME,
    JOURNAL,
    MAX_WRITES_PER_COMMIT,
    VISITORS,
    campaign_ref,
    click_ref,
    day_hour_field,
    day_ref,
    producer_ref,
)
from shared.utc import from_epoch_seconds

log = get_logger("counting")

SKETCH = "sketch"
# Sketches one commit rewrites at most: with the rest of a commit, far within Firestore's 10 MiB request.
MAX_SKETCHES_PER_COMMIT = 8 * 1024 * 1024 // MAX_SKETCH_BYTES

T = TypeVar("T")

# How far ahead of the aggregator's clock a producer's clock may run; also how far behind
# the horizon a producer's clock may have stepped back between two of its events.
CLOCK_SKEW = timedelta(hours=1)
# Firestore calls on the way to a commit, so that a stalled Firestore ends a run within its budget.
CALL_TIMEOUT_SECONDS = 10.0
_CONFLICT_RETRIES = 5
# Journal entries read per page.
_ENTRIES_PER_PAGE = 50
# Events in one journal entry at most: some 15 bytes each once packed, far within a document's 1 MiB.
_MOST_ROWS_PER_ENTRY = 5000


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as delivered by Pub/Sub, whichever way it came."""

    message_id: str
    data: bytes


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# --- step 1: the journal ------------------------------------------------------------------


class Written(NamedTuple):
    """A journal entry as written: all that applying it needs, without reading it back."""

    reference: firestore.DocumentReference
    update_time: Any
    rows: list[Row]

    @property
    def id(self) -> str:
        return str(self.reference.id)


@dataclass
class Received:
    """What became of delivered messages."""

    acked: list[str] = field(default_factory=list)
    """Message ids whose events are in the journal, or that were poison: safe to ack."""
    failed: list[str] = field(default_factory=list)
    """Message ids whose journal write failed or has an unknown outcome: hand them back."""
    journaled: int = 0
    poison: int = 0
    written: list[Written] = field(default_factory=list)
    """The journal entries written."""

    def merge(self, other: Received) -> None:
        self.acked += other.acked
        self.failed += other.failed
        self.journaled += other.journaled
        self.poison += other.poison
        self.written += other.written


def grouped_by_writes(items: Iterable[T], touched: Callable[[T], Iterable[Hashable]], per_item: int,
                      per_group: int) -> list[list[T]]:
    """Consecutive items in groups that each fit one commit: the distinct documents the group's
    items touch, plus ``per_item`` writes each and ``per_group`` for the group, within Firestore's
    500 writes; and the distinct sketches they change (keys tagged ``SKETCH``), within what a
    commit's request can carry."""
    groups: list[list[T]] = []
    current: list[T] = []
    seen: set[Hashable] = set()
    writes = sketches = 0
    for item in items:
        keys = set(touched(item))
        fresh = keys - seen
        fresh_sketches = sum(1 for key in fresh if _is_sketch(key))
        if current and (writes + len(fresh) - fresh_sketches + per_item * (len(current) + 1) + per_group
                        > MAX_WRITES_PER_COMMIT or sketches + fresh_sketches > MAX_SKETCHES_PER_COMMIT):
            groups.append(current)
            current, seen, writes, sketches = [], set(), 0, 0
            fresh = keys
            fresh_sketches = sum(1 for key in fresh if _is_sketch(key))
        current.append(item)
        seen |= fresh
        writes += len(fresh) - fresh_sketches
        sketches += fresh_sketches
    if current:
        groups.append(current)
    return groups


def _is_sketch(key: Hashable) -> bool:
    return isinstance(key, tuple) and bool(key) and key[0] == SKETCH


class Journal:
    """Writes decoded events as journal entries, each small enough to be applied in one commit."""

    def __init__(self, db: firestore.Client, timeout: float = CALL_TIMEOUT_SECONDS, partition: int = 0) -> None:
        self.db = db
        self.timeout = timeout
        self.partition = partition

    def receive(self, deliveries: Sequence[Delivery]) -> Received:
        """Journal the events of these messages; a message is safe to ack once every event of it is
        written, or poison."""
        received = Received()
        rows: list[tuple[str, Row]] = []
        for delivery in deliveries:
            for data in split_events(delivery.data):
                try:
                    rows.append((delivery.message_id, Row.of(ClickEvent.decode(data))))
                except InvalidEvent as exc:
                    log.warning("poison click event acknowledged",
                                extra={"message_ids": [delivery.message_id], "reason": str(exc)})
                    received.poison += 1
        failed: set[str] = set()
        for entry in _entries(rows):
            written = self._write(entry)
            if written is None:
                failed.update(message_id for message_id, _ in entry)
            else:
                received.written.append(written)
                received.journaled += len(entry)
        message_ids = list(dict.fromkeys(delivery.message_id for delivery in deliveries))
        received.acked = [message_id for message_id in message_ids if message_id not in failed]
        received.failed = [message_id for message_id in message_ids if message_id in failed]
        return received

    def _write(self, entry: list[tuple[str, Row]]) -> Written | None:
        """The entry as written, or None when the write failed or its outcome is unknown."""
        ref = self.db.collection(JOURNAL).document(new_entry_id(self.partition))
        rows = [row for _, row in entry]
        try:
            result = ref.create({"events": pack(rows), "count": len(entry)}, timeout=self.timeout)
        except gexc.GoogleAPIError as exc:
            # A timed-out create may still land: the events then come back from Pub/Sub and are
            # journaled again, which the apply step absorbs.
            log.error("journal write outcome unknown; events handed back for redelivery",
                      extra={"error": repr(exc), "message_ids": sorted({message_id for message_id, _ in entry})})
            return None
        return Written(ref, result.update_time, rows)


def _entries(rows: list[tuple[str, Row]]) -> list[list[tuple[str, Row]]]:
    """Split so that each entry's apply fits one commit beside the entry's own delete, and each entry
    is a small document."""
    return [entry for start in range(0, len(rows), _MOST_ROWS_PER_ENTRY)
            for entry in grouped_by_writes(rows[start:start + _MOST_ROWS_PER_ENTRY], lambda item: item[1].touches(),
                                           per_item=0, per_group=1)]


def new_entry_id(partition: int) -> str:
    """Led by the partition, whose apply step alone takes it, then ordered by the time of writing,
    so that the apply step takes the oldest entries first. Leading with the partition also spreads
    the journal's writes over as many key ranges as there are partitions."""
    return f"{_entry_prefix(partition)}{time.time_ns():020d}-{secrets.token_hex(4)}"


def _entry_prefix(partition: int) -> str:
    return f"p{partition:02d}-"


def journal_of(db: firestore.Client, partition: int, before: datetime | None = None) -> firestore.Query:
    """The journal entries of ``partition`` (written before ``before``, if given), oldest first.
    Partition 0's include the entries written before partitions, whose ids begin with their time
    (digits sort before ``p``)."""
    journal = db.collection(JOURNAL)
    prefix = _entry_prefix(partition)
    # "." follows "-": every id that begins with the prefix sorts below the prefix with "." for "-".
    end = prefix[:-1] + "." if before is None else f"{prefix}{int(before.timestamp() * 1e9):020d}"
    query = journal.where(filter=firestore.FieldFilter(DOCUMENT_NAME, "<", journal.document(end)))
    if partition:
        query = query.where(filter=firestore.FieldFilter(DOCUMENT_NAME, ">=", journal.document(prefix)))
    return query.order_by(DOCUMENT_NAME)


def pack(rows: Sequence[Row]) -> bytes:
    """What the apply step needs of each event, compressed: a few bytes a click."""
    return zlib.compress(json.dumps(rows, separators=(",", ":")).encode())


class Row(NamedTuple):
    """An event as the journal keeps it: what counting it needs, ``ts`` in epoch seconds."""

    producer: str
    seq: int
    click_id: str
    campaign_id: int
    platform: str | None
    bot: bool
    ts: int
    inactive: bool = False
    """The campaign could not count the click; rows journaled before the flag were all active."""
    visitor: str = ""
    """The click's visitor key, if it has one."""

    @classmethod
    def of(cls, event: ClickEvent) -> Row:
        return cls(event.producer, event.seq, "" if event.producer else event.click_id, event.campaign_id,
                   event.platform, event.bot, int(event.ts.timestamp()), event.inactive, event.visitor)

    def touches(self) -> tuple[Hashable, ...]:
        """What counting this click writes: its campaign, the campaign's day, and its producer's ledger
        (or, for a schema 1 event, its dedup record), each written once per commit however many of the
        commit's clicks touch it; and the hourly sketch its visitor goes into. A sketch is a field of
        the day, so it costs no write of its own, but it is rewritten whole (up to
        ``shared.sketches.MAX_SKETCH_BYTES``, some 8.5 KB), so a commit holds a bounded number."""
        documents = (("campaign", self.campaign_id), ("day", self.campaign_id, self.ts // 86400),
                     ("producer", self.producer) if self.producer else ("record", self.click_id))
        platform = self.sketch()
        if platform is None:
            return documents
        return (*documents, (SKETCH, self.campaign_id, self.ts - self.ts % 3600, platform))

    def counters(self) -> tuple[str, ...]:
        """The counters this click adds one to; bots, and clicks the campaign could not count, count apart
        from the totals (a bot stays a bot, active or not)."""
        if self.bot:
            return (BOT_FIELD,)
        if self.platform is None:
            return ()
        if self.inactive:
            return (INACTIVE_FIELD, INACTIVE_PLATFORM_FIELDS[self.platform])
        return (TOTAL_FIELD, PLATFORM_FIELDS[self.platform])

    def sketch(self) -> str | None:
        """The platform whose hourly sketch this click's visitor goes into: the visitors are those of the
        clicks the totals count, so neither bots nor inactive clicks."""
        return self.platform if self.visitor and not self.bot and not self.inactive else None


def unpack(data: bytes) -> list[Row]:
    return [_row(values) for values in json.loads(zlib.decompress(data))]


def _row(values: list[Any]) -> Row:
    """A row journaled by any version: it ends with ``ts`` (before the inactive flag and visitor keys),
    with the flag, with the visitor key (the first version with visitor keys, which had no flag), or with
    both. A flag is a JSON boolean and a key a string, so the two rows of eight tell themselves apart."""
    if len(values) == 8 and isinstance(values[7], str):
        return Row._make([*values[:7], False, values[7]])
    return Row(*values)


# --- step 2: applying the journal ---------------------------------------------------------


class Ledger:
    """A producer's counted sequence numbers as sorted, disjoint, non-adjacent ranges.

    Each range also keeps the ``ts`` (epoch seconds) of its lowest event, which bounds
    the ``ts`` of every event in the gap below it (a producer numbers its events in the
    order it makes them).
    """

    def __init__(self, ranges: list[list[int]] | None = None, newest: int = 0) -> None:
        self.ranges = ranges or []  # [low, high, ts of low]
        self.newest = newest
        """The highest ``ts`` of any event counted."""

    @classmethod
    def from_document(cls, data: dict[str, Any]) -> Ledger:
        flat = list(data.get("ranges", ()))
        return cls([flat[i:i + 3] for i in range(0, len(flat), 3)], int(data.get("newest", 0)))

    def document(self, horizon: timedelta) -> dict[str, Any]:
        expire_at = from_epoch_seconds(self.newest) + horizon + timedelta(days=1)
        return {"ranges": [n for r in self.ranges for n in r], "newest": self.newest, "expire_at": expire_at}

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self.ranges, [seq, float("inf")]) - 1
        return i >= 0 and self.ranges[i][0] <= seq <= self.ranges[i][1]

    def add(self, seq: int, ts: int) -> None:
        """Record a number not yet in the ledger."""
        self.newest = max(self.newest, ts)
        i = bisect.bisect_right(self.ranges, [seq, float("inf")])
        below = self.ranges[i - 1] if i > 0 and self.ranges[i - 1][1] == seq - 1 else None
        above = self.ranges[i] if i < len(self.ranges) and self.ranges[i][0] == seq + 1 else None
        if below and above:
            below[1] = above[1]
            del self.ranges[i]
        elif below:
            below[1] = seq
        elif above:
            above[0], above[2] = seq, ts
        else:
            self.ranges.insert(i, [seq, seq, ts])

    def compact(self, before: int) -> None:
        """Close every gap that can only hold events whose ``ts`` is before ``before``."""
        merged: list[list[int]] = []
        for low, high, low_ts in self.ranges:
            if low_ts < before:
                if merged:
                    merged[-1][1] = high
                    continue
                low = 1  # the numbers below the first range are as old
            merged.append([low, high, low_ts])
        self.ranges = merged


@dataclass
class Applied:
    entries: int = 0
    counted: int = 0
    duplicates: int = 0
    poison: int = 0
    """Events of campaigns that no longer exist, or with a ``ts`` outside the horizon."""
    complete: bool = False
    """The journal was empty when the step ended."""
    oldest_left: str | None = None
    """The id of the oldest entry left when the step ran out of time."""

    def merge(self, other: Applied) -> None:
        self.entries += other.entries
        self.counted += other.counted
        self.duplicates += other.duplicates
        self.poison += other.poison


class Conflict(Exception):
    """Another applier, or a delete, changed what a commit was conditional on."""


class Applier:
    def __init__(self, db: firestore.Client, horizon: timedelta, clock: Callable[[], datetime] = utc_now) -> None:
        self.db = db
        self.horizon = horizon
        self.clock = clock

    def apply(self, deadline: float, partition: int = 0, before: datetime | None = None) -> Applied:
        """Apply ``partition``'s journal entries (those written before ``before``, if given), oldest
        first, until none is left or ``deadline`` (monotonic) passes."""
        result = Applied()
        while time.monotonic() < deadline:
            query = journal_of(self.db, partition, before).limit(_ENTRIES_PER_PAGE)
            entries = list(query.stream(timeout=CALL_TIMEOUT_SECONDS))
            if not entries:
                result.complete = True
                return result
            result.merge(self._apply_grouped(entries, {entry.id: unpack(entry.get("events")) for entry in entries},
                                             deadline))
        log.warning("journal apply ran out of time; the next run goes on", extra={"entries": result.entries})
        return result

    def apply_written(self, written: Sequence[Written], deadline: float) -> Applied:
        """Apply entries as this process wrote them, from the rows it wrote: without reading them back.
        What ``deadline`` leaves unapplied stays in the journal for :meth:`apply`."""
        return self._apply_grouped(written, {entry.id: entry.rows for entry in written}, deadline)

    def _apply_grouped(self, entries: Sequence[Any], rows: dict[str, list[Row]], deadline: float) -> Applied:
        # Entries of one stretch of time touch mostly the same campaigns, days and producers,
        # so a commit holds many: each document is written once for all of them.
        touched = [(entry, {key for row in rows[entry.id] for key in row.touches()}) for entry in entries]
        result = Applied()
        for group in grouped_by_writes(touched, lambda pair: pair[1], per_item=1, per_group=0):
            if time.monotonic() >= deadline:
                break
            result.merge(self.apply_entries([entry for entry, _ in group], rows))
        return result

    def apply_entries(self, entries: Sequence[Any], rows: dict[str, list[Row]] | None = None) -> Applied:
        """Apply these entries (snapshots of ``journal/*``; ``rows``: what is already unpacked of
        them, by entry id) in one commit, re-reading on conflict."""
        rows = {} if rows is None else rows
        for _ in range(_CONFLICT_RETRIES):
            try:
                return self._commit(entries, rows)
            except Conflict:
                refs = [entry.reference for entry in entries]
                entries = [s for s in self.db.get_all(refs, timeout=CALL_TIMEOUT_SECONDS) if s.exists]
                if not entries:
                    return Applied()  # another applier applied them
        log.error("journal entries left for the next run after repeated conflicts",
                  extra={"entries": [entry.id for entry in entries]})
        return Applied()

    def _commit(self, entries: Sequence[Any], rows: dict[str, list[Row]]) -> Applied:
        for entry in entries:
            if entry.id not in rows:
                rows[entry.id] = unpack(entry.get("events"))
        events = [row for entry in entries for row in rows[entry.id]]
        ledgers, ledger_times = self._ledgers({e.producer for e in events if e.producer})
        recorded = self._recorded({e.click_id for e in events if not e.producer})
        live = self._live({e.campaign_id for e in events})
        now = self.clock()
        oldest, newest = (now - self.horizon).timestamp(), (now + CLOCK_SKEW).timestamp()
        result = Applied(entries=len(entries))
        counted: list[Row] = []
        poison: list[Row] = []
        new_records: list[str] = []
        for event in events:
            if not oldest <= event.ts <= newest or event.campaign_id not in live:
                poison.append(event)
            elif event.producer:
                ledger = ledgers.setdefault(event.producer, Ledger())
                if event.seq in ledger:
                    result.duplicates += 1
                    continue
                ledger.add(event.seq, event.ts)
                counted.append(event)
            elif event.click_id in recorded:
                result.duplicates += 1
            else:
                recorded.add(event.click_id)
                new_records.append(event.click_id)
                counted.append(event)
        batch = self.db.batch()
        self._count(batch, counted)
        cutoff = int((now - self.horizon - CLOCK_SKEW).timestamp())
        for producer, ledger in ledgers.items():
            ledger.compact(cutoff)
            ref = producer_ref(self.db, producer)
            if producer in ledger_times:
                batch.update(ref, ledger.document(self.horizon),
                             option=self.db.write_option(last_update_time=ledger_times[producer]))
            else:
                batch.create(ref, ledger.document(self.horizon))
        for click_id in new_records:
            batch.create(click_ref(self.db, click_id), {"expire_at": now + self.horizon})
        for entry in entries:
            batch.delete(entry.reference, option=self.db.write_option(last_update_time=entry.update_time))
        try:
            batch.commit(timeout=CALL_TIMEOUT_SECONDS)
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound) as exc:
            raise Conflict(repr(exc)) from None
        for event in poison:
            log.warning("poison click event dropped", extra={
                "producer": event.producer, "seq": event.seq, "click_id": event.click_id,
                "campaign_id": event.campaign_id, "ts": event.ts,
                "reason": "campaign does not exist" if event.campaign_id not in live else "ts outside the horizon"})
        result.counted, result.poison = len(counted), len(poison)
        return result

    def _count(self, batch: firestore.WriteBatch, events: Sequence[Row]) -> None:
        # Per click only tallies: (campaign, UTC hour as epoch seconds, counters) -> clicks, and
        # (campaign, hour, platform) -> visitor keys. The rest is per tally, far fewer.
        tallies: Counter[tuple[int, int, tuple[str, ...]]] = Counter()
        sketched_visitors: defaultdict[tuple[int, int, str], set[str]] = defaultdict(set)
        for event in events:
            hour = event.ts - event.ts % 3600
            tallies[(event.campaign_id, hour, event.counters())] += 1
            platform = event.sketch()
            if platform is not None:
                sketched_visitors[(event.campaign_id, hour, platform)].add(event.visitor)
        hour_fields = {hour: day_hour_field(from_epoch_seconds(hour)) for _, hour, _ in tallies}
        totals: defaultdict[int, Counter[str]] = defaultdict(Counter)
        # (campaign, UTC day as epoch seconds) -> hour field -> counter -> clicks
        day_counts: defaultdict[tuple[int, int], defaultdict[str, Counter[str]]] = defaultdict(
            lambda: defaultdict(Counter))
        for (campaign_id, hour, names), n in tallies.items():
            if not names:
                continue
            cell = day_counts[(campaign_id, hour - hour % 86400)][hour_fields[hour]]
            for name in names:
                totals[campaign_id][name] += n
                cell[name] += n
        # (campaign, day) -> (hour field, platform) -> visitor keys
        visitors: defaultdict[tuple[int, int], dict[tuple[str, str], set[str]]] = defaultdict(dict)
        for (campaign_id, hour, platform), keys in sketched_visitors.items():
            visitors[(campaign_id, hour - hour % 86400)][(hour_fields[hour], platform)] = keys
        for campaign_id, deltas in totals.items():
            # update, not set: a campaign deleted since it was read fails the commit, and is not recreated.
            batch.update(campaign_ref(self.db, campaign_id),
                         {f"{COUNTS}.{name}": firestore.Increment(n) for name, n in deltas.items()})
        days = {day: {h: {name: firestore.Increment(n) for name, n in named.items()} for h, named in hours.items()}
                for day, hours in day_counts.items()}
        sketched = self._days(visitors)
        for (campaign_id, day), counts in days.items():
            moment = from_epoch_seconds(day)
            ref = day_ref(self.db, campaign_id, moment)
            snapshot = sketched.get(ref.path)
            if snapshot is None:  # no sketch to change: the increments need no read
                batch.set(ref, {"day": moment, COUNTS: counts}, merge=True)
                continue
            stored = (snapshot.to_dict() or {}).get(VISITORS, {}) if snapshot.exists else {}
            sketches = {(hour_field, platform): add_visitors(stored.get(hour_field, {}).get(platform), keys)
                        for (hour_field, platform), keys in visitors[(campaign_id, day)].items()}
            if snapshot.exists:
                batch.update(ref, {
                    **{f"{COUNTS}.{h}.{name}": n for h, named in counts.items() for name, n in named.items()},
                    **{f"{VISITORS}.{h}.{platform}": sketch for (h, platform), sketch in sketches.items()},
                }, option=self.db.write_option(last_update_time=snapshot.update_time))
            else:
                nested: defaultdict[str, dict[str, bytes]] = defaultdict(dict)
                for (h, platform), sketch in sketches.items():
                    nested[h][platform] = sketch
                batch.create(ref, {"day": moment, COUNTS: counts, VISITORS: dict(nested)})

    def _days(self, visitors: Mapping[tuple[int, int], Mapping[tuple[str, str], set[str]]]) -> dict[str, Any]:
        """The day documents whose sketches change, by path: only the sketches that change are read."""
        refs = [day_ref(self.db, campaign_id, from_epoch_seconds(day)) for campaign_id, day in visitors]
        if not refs:
            return {}
        fields = sorted({f"{VISITORS}.{h}.{platform}" for cells in visitors.values() for h, platform in cells})
        return {s.reference.path: s for s in self.db.get_all(refs, field_paths=fields, timeout=CALL_TIMEOUT_SECONDS)}

    def _ledgers(self, producers: set[str]) -> tuple[dict[str, Ledger], dict[str, Any]]:
        """Each producer's ledger, and the update time of those that exist."""
        ledgers: dict[str, Ledger] = {}
        times: dict[str, Any] = {}
        refs = [producer_ref(self.db, p) for p in producers]
        for snapshot in self.db.get_all(refs, timeout=CALL_TIMEOUT_SECONDS) if refs else ():
            if snapshot.exists:
                ledgers[snapshot.id] = Ledger.from_document(snapshot.to_dict() or {})
                times[snapshot.id] = snapshot.update_time
        return ledgers, times

    def _recorded(self, click_ids: set[str]) -> set[str]:
        refs = [click_ref(self.db, c) for c in click_ids]
        snapshots = self.db.get_all(refs, field_paths=[], timeout=CALL_TIMEOUT_SECONDS) if refs else ()
        return {s.id for s in snapshots if s.exists}

    def _live(self, campaign_ids: set[int]) -> set[int]:
        refs = [campaign_ref(self.db, i) for i in campaign_ids]
        snapshots = self.db.get_all(refs, field_paths=[], timeout=CALL_TIMEOUT_SECONDS) if refs else ()
        return {int(s.id) for s in snapshots if s.exists}
