"""Deferred deletes: what a deleted campaign leaves behind, removed a bounded amount per run.

The admin's delete leaves a tombstone ``deletions/{id}``; :class:`DeletionSweeper`
removes the campaign's subcollections and markers a bounded number of documents
per run, tombstone last, so a run that stops halfway is finished by the next,
and a second run finds nothing to do. Only tombstones older than a grace period
are swept: a fold that checked the campaign just before the delete commits well
within it, and its counters are swept with the rest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from google.cloud import firestore

from shared.counting import CALL_TIMEOUT_SECONDS
from shared.store import DELETIONS, DIRTY, DOCUMENT_NAME, MAX_WRITES_PER_COMMIT, campaign_ref

_TOMBSTONES_PER_QUERY = 20


@dataclass
class SweepResult:
    deleted: int = 0
    """Documents deleted: counter shards, hourly buckets, markers and tombstones."""
    campaigns: list[int] = field(default_factory=list)
    """Campaigns whose cleanup finished (tombstone removed)."""


class DeletionSweeper:
    def __init__(self, db: firestore.Client, grace: timedelta, max_documents: int) -> None:
        self.db = db
        self.grace = grace
        self.max_documents = max_documents

    def sweep(self, deadline: float) -> SweepResult:
        """Clean up after deleted campaigns, oldest first, deleting at most ``max_documents``,
        until ``deadline`` (monotonic)."""
        result = SweepResult()
        cutoff = datetime.now(timezone.utc) - self.grace
        query = (self.db.collection(DELETIONS)
                 .where(filter=firestore.FieldFilter("deleted_at", "<=", cutoff))
                 .order_by("deleted_at").limit(_TOMBSTONES_PER_QUERY))
        while time.monotonic() < deadline:
            tombstones = list(query.stream(timeout=CALL_TIMEOUT_SECONDS))
            for tombstone in tombstones:
                if time.monotonic() >= deadline or not self._sweep_campaign(
                        int(tombstone.id), tombstone.reference, result):
                    return result  # budget spent
            if len(tombstones) < _TOMBSTONES_PER_QUERY:
                return result
        return result

    def _sweep_campaign(self, campaign_id: int, tombstone: firestore.DocumentReference, result: SweepResult) -> bool:
        """Delete what is left of one campaign; False if the budget ran out first."""
        dirty = self.db.collection(DIRTY)
        # Marker names are "<id>-<shard>": the range of names from "<id>-" up to "<id>." ('.' follows '-').
        markers = (dirty.where(filter=firestore.FieldFilter(DOCUMENT_NAME, ">=", dirty.document(f"{campaign_id}-")))
                   .where(filter=firestore.FieldFilter(DOCUMENT_NAME, "<", dirty.document(f"{campaign_id}."))))
        for query in [*campaign_ref(self.db, campaign_id).collections(timeout=CALL_TIMEOUT_SECONDS), markers]:
            while True:
                budget = self.max_documents - result.deleted
                if budget <= 0:
                    return False
                page = query.select([]).limit(min(budget, MAX_WRITES_PER_COMMIT))
                refs = [s.reference for s in page.stream(timeout=CALL_TIMEOUT_SECONDS)]
                if not refs:
                    break
                self._delete(refs, result)
        if self.max_documents - result.deleted < 1:
            return False
        self._delete([tombstone], result)  # last: until here, a later run takes over
        result.campaigns.append(campaign_id)
        return True

    def _delete(self, refs: Sequence[firestore.DocumentReference], result: SweepResult) -> None:
        batch = self.db.batch()
        for ref in refs:
            batch.delete(ref)
        batch.commit(timeout=CALL_TIMEOUT_SECONDS)
        result.deleted += len(refs)
