"""What the version before the journal left in Firestore: sharded counters, hourly buckets and dirty
markers, written here as that version's commits wrote them, so that the refresh that finishes its
work after an upgrade (functions/aggregate/legacy_totals.py) is tested on the layout it must read."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from google.cloud import firestore

from shared.counting import Row
from shared.events import ClickEvent
from shared.store import MARKED_HOURS, dirty_ref, hour_key, hourly_ref, shard_ref
from shared.utc import hour_of


class LegacyFolder:
    """One aggregator of that version: each commit on the next counter shard."""

    def __init__(self, db: Any, counter_shards: int) -> None:
        self.db = db
        self._shards = itertools.cycle(range(counter_shards))

    def fold(self, events: list[ClickEvent]) -> None:
        shard = next(self._shards)
        batch = self.db.batch()
        by_campaign: defaultdict[int, list[ClickEvent]] = defaultdict(list)
        by_hour: defaultdict[tuple[int, datetime], list[ClickEvent]] = defaultdict(list)
        for event in events:
            by_campaign[event.campaign_id].append(event)
            by_hour[(event.campaign_id, hour_of(event.ts))].append(event)
        for campaign_id, group in by_campaign.items():
            batch.set(shard_ref(self.db, campaign_id, shard), _increments(group), merge=True)
            hours = [hour_key(hour) for (c, hour) in by_hour if c == campaign_id]
            batch.set(dirty_ref(self.db, campaign_id, shard),
                      {"marks": firestore.Increment(1), MARKED_HOURS: firestore.ArrayUnion(hours)}, merge=True)
        for (campaign_id, hour), group in by_hour.items():
            batch.set(hourly_ref(self.db, campaign_id, hour, shard), {"hour": hour, "shard": shard,
                                                                      **_increments(group)}, merge=True)
        batch.commit()


def _increments(events: list[ClickEvent]) -> dict[str, Any]:
    deltas = Counter(name for event in events for name in Row.of(event).counters())
    return {name: firestore.Increment(n) for name, n in deltas.items()}
