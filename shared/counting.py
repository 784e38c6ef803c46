"""The folding core: turn delivered click events into exact counters.

Both aggregate entry points (one pushed event, or a pulled batch) call
:meth:`ClickFolder.fold`. Exactly-once effect without transactions:

* every counted click leaves a dedup record ``clicks/{click_id}``, written with
  a *create* precondition in the same atomic batch as the counter increments;
* before committing, existing records are read and those clicks dropped as
  duplicates; if another aggregator counts one of them in between, the create
  fails, the whole batch is rejected, and the chunk is re-read and retried.

So a redelivered, reordered or concurrently folded event changes the counters
at most once, and a crash between commit and ack only causes a redelivery
that the dedup records absorb. Increments are grouped per campaign (and per
campaign hour) within a commit and land on one of several counter shards,
so a hot campaign costs one write per shard per commit, not one per click.
Each counter shard written also marks its campaign dirty (``dirty/{id}-{k}``,
sharded like the counters, listing the hours the commit touched) in the same
batch, so the aggregator's refresh of what readers see (functions/aggregate/upkeep.py)
never misses a commit.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.errors import InvalidEvent
from shared.events import ClickEvent
from shared.logs import get_logger
from shared.platforms import BOT_FIELD, PLATFORM_FIELDS, TOTAL_FIELD
from shared.store import MARKED_HOURS, campaign_ref, click_ref, dirty_ref, hour_key, hourly_ref, shard_ref

log = get_logger("counting")

MAX_WRITES_PER_COMMIT = 500  # Firestore's limit for one batched write
_CONFLICT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as delivered by Pub/Sub, whichever way it came."""

    message_id: str
    data: bytes


@dataclass
class FoldResult:
    acked: list[str] = field(default_factory=list)
    """Message ids whose effect is durable (counted, duplicate or poison): safe to ack."""
    failed: list[str] = field(default_factory=list)
    """Message ids that could not be committed: leave them for redelivery."""
    counted: int = 0
    duplicates: int = 0
    poison: int = 0
    writes: list[str] = field(default_factory=list)
    """Counter document paths written, one entry per write, for write-rate figures."""

    def merge(self, other: FoldResult) -> None:
        self.acked += other.acked
        self.failed += other.failed
        self.counted += other.counted
        self.duplicates += other.duplicates
        self.poison += other.poison
        self.writes += other.writes


@dataclass
class _Pending:
    event: ClickEvent
    message_ids: list[str]


def counter_deltas(events: Sequence[ClickEvent]) -> dict[str, int]:
    """Counter increments for a group of clicks; bots count apart from the totals."""
    deltas: Counter[str] = Counter()
    for event in events:
        if event.bot:
            deltas[BOT_FIELD] += 1
        elif event.platform is not None:
            deltas[TOTAL_FIELD] += 1
            deltas[PLATFORM_FIELDS[event.platform]] += 1
    return dict(deltas)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


class ClickFolder:
    def __init__(self, db: firestore.Client, counter_shards: int, dedup_retention: timedelta) -> None:
        self.db = db
        self.dedup_retention = dedup_retention
        # Round-robin from a random start: consecutive commits of one folder
        # never hit the same shard, and two folders rarely start together.
        self._shards = itertools.cycle(random.sample(range(counter_shards), counter_shards))

    def fold(self, deliveries: Sequence[Delivery]) -> FoldResult:
        result = FoldResult()
        pending: dict[str, _Pending] = {}
        for delivery in deliveries:
            try:
                event = ClickEvent.decode(delivery.data)
            except InvalidEvent as exc:
                self._poison(result, [delivery.message_id], str(exc))
                continue
            if event.click_id in pending:
                pending[event.click_id].message_ids.append(delivery.message_id)
                result.duplicates += 1
            else:
                pending[event.click_id] = _Pending(event, [delivery.message_id])

        live = self._existing_campaigns({p.event.campaign_id for p in pending.values()})
        countable = []
        for item in pending.values():
            if item.event.campaign_id in live:
                countable.append(item)
            else:
                self._poison(result, item.message_ids, f"campaign {item.event.campaign_id} does not exist")
        for chunk in _chunks(countable):
            result.merge(self._commit(chunk))
        return result

    def _existing_campaigns(self, campaign_ids: set[int]) -> set[int]:
        if not campaign_ids:
            return set()
        snapshots = self.db.get_all([campaign_ref(self.db, i) for i in campaign_ids], field_paths=[])
        return {int(s.id) for s in snapshots if s.exists}

    def _commit(self, chunk: list[_Pending]) -> FoldResult:
        result = FoldResult()
        for _ in range(_CONFLICT_RETRIES):
            counted = self._already_counted([p.event.click_id for p in chunk])
            fresh = [p for p in chunk if p.event.click_id not in counted]
            batch, writes = self._batch([p.event for p in fresh])
            try:
                if fresh:
                    batch.commit()
            except gexc.AlreadyExists:
                continue  # another folder counted some of these meanwhile; re-read
            except gexc.GoogleAPIError as exc:
                log.error(
                    "commit failed; events left for redelivery",
                    extra={"error": repr(exc), "message_ids": _ids(chunk)},
                )
                result.failed += _ids(chunk)
                return result
            result.counted += len(fresh)
            result.duplicates += len(chunk) - len(fresh)
            result.acked += _ids(chunk)
            result.writes += writes
            return result
        log.error("gave up after repeated dedup conflicts", extra={"message_ids": _ids(chunk)})
        result.failed += _ids(chunk)
        return result

    def _already_counted(self, click_ids: list[str]) -> set[str]:
        snapshots = self.db.get_all([click_ref(self.db, c) for c in click_ids], field_paths=[])
        return {s.id for s in snapshots if s.exists}

    def _batch(self, events: list[ClickEvent]) -> tuple[firestore.WriteBatch, list[str]]:
        batch = self.db.batch()
        expire_at = datetime.now(timezone.utc) + self.dedup_retention
        by_campaign: defaultdict[int, list[ClickEvent]] = defaultdict(list)
        by_hour: defaultdict[tuple[int, datetime], list[ClickEvent]] = defaultdict(list)
        for event in events:
            batch.create(click_ref(self.db, event.click_id), {"expire_at": expire_at})
            by_campaign[event.campaign_id].append(event)
            by_hour[(event.campaign_id, hour_of(event.ts))].append(event)
        # One shard for the whole commit, so every campaign in it moves to the
        # next shard with each commit, however many campaigns share the commit.
        shard = next(self._shards)
        writes = []
        hours: defaultdict[int, list[str]] = defaultdict(list)
        for campaign_id, hour in by_hour:
            hours[campaign_id].append(hour_key(hour))
        for campaign_id, group in by_campaign.items():
            ref = shard_ref(self.db, campaign_id, shard)
            batch.set(ref, _increments(group), merge=True)
            # Marks the campaign's totals and these hours stale for the aggregator's
            # refresh; the increment makes every marking a change, which the
            # refresh's delete precondition sees.
            marker = dirty_ref(self.db, campaign_id, shard)
            batch.set(marker, {"marks": firestore.Increment(1), MARKED_HOURS: firestore.ArrayUnion(hours[campaign_id])},
                      merge=True)
            writes += [ref.path, marker.path]
        for (campaign_id, hour), group in by_hour.items():
            ref = hourly_ref(self.db, campaign_id, hour, shard)
            batch.set(ref, {"hour": hour, "shard": shard, **_increments(group)}, merge=True)
            writes.append(ref.path)
        return batch, writes

    @staticmethod
    def _poison(result: FoldResult, message_ids: list[str], reason: str) -> None:
        log.warning("poison click event acknowledged", extra={"message_ids": message_ids, "reason": reason})
        result.poison += 1
        result.acked += message_ids


def _increments(events: Sequence[ClickEvent]) -> dict[str, firestore.Increment]:
    return {name: firestore.Increment(n) for name, n in counter_deltas(events).items()}


def _ids(chunk: Sequence[_Pending]) -> list[str]:
    return [message_id for item in chunk for message_id in item.message_ids]


def _chunks(items: list[_Pending]) -> list[list[_Pending]]:
    """Split so each commit, dedup records and counter writes together, fits Firestore's limit."""
    chunks: list[list[_Pending]] = []
    current: list[_Pending] = []
    campaigns: set[int] = set()
    hours: set[tuple[int, datetime]] = set()
    for item in items:
        key = (item.event.campaign_id, hour_of(item.event.ts))
        # A dedup record per click; a shard and a dirty marker per campaign; a bucket per campaign hour.
        writes = len(current) + 1 + 2 * len(campaigns | {key[0]}) + len(hours | {key})
        if current and writes > MAX_WRITES_PER_COMMIT:
            chunks.append(current)
            current, campaigns, hours = [], set(), set()
        current.append(item)
        campaigns.add(key[0])
        hours.add(key)
    if current:
        chunks.append(current)
    return chunks
