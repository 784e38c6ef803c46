"""What the scheduled aggregate run does besides counting: legacy totals, ``as_of``, deferred deletes.

**Legacy totals.** The version before the journal (:mod:`shared.counting`)
counted into sharded counters: ``campaigns/{id}/counter_shards/*`` and hourly
buckets, marked ``dirty/{id}-{k}`` in the same commit, and summed into
``campaigns/{id}.totals`` and ``days/*.hours`` by this refresh, which readers
add to the journal's ``counts``. :class:`TotalsRefresher` finishes what such a
deployment left marked when it was upgraded; with no marker left it costs one
read a run. It walks the markers once, and for their campaigns reads the
campaign document, all its shards, the marked hours' bucket shards and their
day documents in one read-only transaction (one consistent snapshot), then
writes the sums into the campaign document and the day documents

* only if they differ from, and dominate, the stored ones (shards only grow, so
  a consistent sum never goes down: a smaller one means something is wrong);
* with the snapshot's update time as precondition, so two runs racing cannot
  write an older sum over a newer one, and a deleted campaign is never recreated.

A marker is then deleted only if unchanged since it was read (its update-time
precondition; every marking increments it): a commit after the snapshot leaves
its marker for the next run.

**as_of.** :func:`advance_as_of` moves ``aggregator/state.as_of`` forward only;
when a run may move it is the scheduled run's business (functions/aggregate/aggregation.py).

**Deletes.** The admin's delete leaves a tombstone ``deletions/{id}``;
:class:`DeletionSweeper` removes the campaign's subcollections and markers a
bounded number of documents per run, tombstone last, so a run that stops
halfway is finished by the next, and a second run finds nothing to do. Only
tombstones older than a grace period are swept: a fold that checked the
campaign just before the delete commits well within it, and its counters are
swept with the rest.

**Backfill.** Campaigns written before the ``targets`` map or ``status`` existed
get them from :class:`CampaignBackfill`, page after page while a run has time, so
the admin's list filters find them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.counting import CALL_TIMEOUT_SECONDS, grouped_by_size
from shared.logs import get_logger
from shared.models import ACTIVE, Counters, zero_counters
from shared.platforms import COUNTER_FIELDS
from shared.store import (
    AS_OF,
    CAMPAIGNS,
    DAY_HOURS,
    DELETIONS,
    DIRTY,
    MARKED_HOURS,
    STATUS,
    TARGETS,
    TOTALS,
    add_counts,
    campaign_ref,
    data_of,
    day_hour_field,
    day_ref,
    hour_from_key,
    hour_key,
    hourly_ref,
    shard_ref,
    state_ref,
    sum_shards,
    targets_of,
)

log = get_logger("upkeep")

_MARKER_PAGE = 300
_READ_BATCH_DOCUMENTS = 300  # documents per consistent read, about: campaigns, shards, buckets, days
_WRITE_BATCH = 500  # Firestore's limit for one batched write
_PRECONDITION_RETRIES = 3
_TOMBSTONES_PER_QUERY = 20
_BACKFILL_PAGE = 400  # with one write each, within a batch's 500
# Its progress in aggregator/state; a deployment that went through the targets-only backfill
# before ("targets_backfill") walks its campaigns once more, for status.
_BACKFILL = "campaign_backfill"
_NAME = "__name__"


@dataclass
class RefreshResult:
    campaigns: int = 0
    """Campaigns whose totals were written."""
    markers: int = 0
    """Markers processed."""
    complete: bool = False
    """Every marker present when the pass began was processed."""


class TotalsRefresher:
    def __init__(self, db: firestore.Client, counter_shards: int) -> None:
        self.db = db
        self.counter_shards = counter_shards

    def refresh(self, deadline: float) -> RefreshResult:
        """One pass over the markers in name order, until ``deadline`` (monotonic)."""
        result = RefreshResult()
        page_size = max(_MARKER_PAGE, 2 * self.counter_shards)
        after: firestore.DocumentReference | None = None
        all_done = True
        while time.monotonic() < deadline:
            query = self.db.collection(DIRTY).order_by(_NAME).limit(page_size)
            if after is not None:
                query = query.start_after({_NAME: after})
            markers = list(query.stream(timeout=CALL_TIMEOUT_SECONDS))
            groups = _by_campaign(markers)
            last_page = len(markers) < page_size
            if not last_page and len(groups) > 1:
                # The last campaign's markers may go on in the next page: take them all there,
                # so that a campaign is refreshed once per run.
                groups.popitem()
            if groups:
                after = next(reversed(groups.values()))[-1].reference
            result.markers += sum(len(group) for group in groups.values())
            all_done &= self._refresh(groups, result)
            if last_page:
                result.complete = all_done
                return result
        log.warning("totals refresh ran out of time; the next run goes on", extra={"markers": result.markers})
        return result

    def _refresh(self, groups: dict[int, list[Any]], result: RefreshResult) -> bool:
        """Refresh these campaigns and drop their markers; False if one was left stale."""
        plans = [_Plan.of(campaign_id, markers) for campaign_id, markers in groups.items()]
        done = True
        for reading in self._readings(plans):
            pending = reading
            for _ in range(_PRECONDITION_RETRIES):
                pending, written = self._refresh_once(pending, result)
                done &= written
                if not pending:
                    break
            if pending:
                log.warning("totals left stale after repeated concurrent changes",
                            extra={"campaign_ids": [p.campaign_id for p in pending]})
                done = False
        return done

    def _readings(self, plans: list[_Plan]) -> list[list[_Plan]]:
        """Plans grouped so that each consistent read stays near ``_READ_BATCH_DOCUMENTS``."""
        return grouped_by_size(plans, lambda plan: plan.documents(self.counter_shards), _READ_BATCH_DOCUMENTS)

    def _refresh_once(self, plans: list[_Plan], result: RefreshResult) -> tuple[list[_Plan], bool]:
        """One consistent read and the writes it allows: the plans to read again, and False if
        a campaign could not be refreshed at all."""
        refs = [ref for plan in plans for ref in plan.refs(self.db, self.counter_shards)]
        by_path = {s.reference.path: s for s in self._read_consistently(refs)}
        retry, written = [], True
        for plan in plans:
            campaign = by_path[campaign_ref(self.db, plan.campaign_id).path]
            if not campaign.exists:
                self._drop_markers(plan.markers, checked=False)  # deleted: nothing to refresh
                continue
            batch = self._batch(plan, campaign, by_path)
            if batch is None:
                written = False  # markers kept: the pass is not complete
                continue
            if len(batch):
                try:
                    batch.commit(timeout=CALL_TIMEOUT_SECONDS)
                except (gexc.FailedPrecondition, gexc.AlreadyExists):
                    retry.append(plan)  # edited, refreshed by another run, or deleted meanwhile
                    continue
                result.campaigns += 1
            self._drop_markers(plan.markers, checked=True)
        return retry, written

    def _batch(self, plan: _Plan, campaign: Any, by_path: dict[str, Any]) -> firestore.WriteBatch | None:
        """The writes that bring the campaign's totals and touched days up to the shards, each
        conditional on the document being as read; None if a sum came out lower than shown."""
        batch = self.db.batch()
        shards = [by_path[shard_ref(self.db, plan.campaign_id, k).path] for k in range(self.counter_shards)]
        fresh = sum_shards(shards, [plan.campaign_id])[plan.campaign_id]
        if not self._dominates(plan.campaign_id, "totals", fresh, data_of(campaign).get(TOTALS)):
            return None
        if fresh != _counters(data_of(campaign).get(TOTALS) or {}):
            batch.update(campaign.reference, {TOTALS: fresh},
                         option=self.db.write_option(last_update_time=campaign.update_time))
        changes: dict[datetime, dict[str, Counters]] = {}
        for hour in plan.hours:
            counts = zero_counters()
            for k in range(self.counter_shards):
                add_counts(counts, data_of(by_path[hourly_ref(self.db, plan.campaign_id, hour, k).path]))
            day = by_path[day_ref(self.db, plan.campaign_id, _day(hour)).path]
            shown = data_of(day).get(DAY_HOURS, {}).get(day_hour_field(hour))
            if not self._dominates(plan.campaign_id, hour_key(hour), counts, shown):
                return None
            if counts != _counters(shown or {}):
                changes.setdefault(_day(hour), {})[day_hour_field(hour)] = counts
        for moment, hours in changes.items():
            day = by_path[day_ref(self.db, plan.campaign_id, moment).path]
            if day.exists:
                batch.update(day.reference, {f"{DAY_HOURS}.{name}": counts for name, counts in hours.items()},
                             option=self.db.write_option(last_update_time=day.update_time))
            else:
                batch.create(day.reference, {"day": moment, DAY_HOURS: hours})
        return batch

    @staticmethod
    def _dominates(campaign_id: int, what: str, fresh: Counters, shown: dict[str, Any] | None) -> bool:
        if all(fresh[name] >= int((shown or {}).get(name, 0)) for name in COUNTER_FIELDS):
            return True
        log.error("counter shards sum below what is shown; not written (was COUNTER_SHARDS lowered?)",
                  extra={"campaign_id": campaign_id, "what": what, "shards": fresh, "shown": shown})
        return False

    def _read_consistently(self, refs: list[firestore.DocumentReference]) -> list[Any]:
        @firestore.transactional
        def read(transaction: firestore.Transaction) -> list[Any]:
            return list(self.db.get_all(refs, transaction=transaction, timeout=CALL_TIMEOUT_SECONDS))

        snapshots: list[Any] = read(self.db.transaction(read_only=True))
        return snapshots

    def _drop_markers(self, markers: Sequence[Any], *, checked: bool) -> None:
        """Delete markers; ``checked``: only those unchanged since read, one by one if need be."""
        batch = self.db.batch()
        for marker in markers:
            option = self.db.write_option(last_update_time=marker.update_time) if checked else None
            batch.delete(marker.reference, option=option)
        try:
            batch.commit(timeout=CALL_TIMEOUT_SECONDS)
        except gexc.FailedPrecondition:
            for marker in markers:  # some were marked again: keep those for the next run
                with contextlib.suppress(gexc.FailedPrecondition):
                    marker.reference.delete(option=self.db.write_option(last_update_time=marker.update_time),
                                            timeout=CALL_TIMEOUT_SECONDS)


@dataclass
class _Plan:
    """A marked campaign and the hours its markers list."""

    campaign_id: int
    markers: list[Any]
    hours: list[datetime]

    @classmethod
    def of(cls, campaign_id: int, markers: list[Any]) -> _Plan:
        keys = {key for marker in markers for key in data_of(marker).get(MARKED_HOURS, ())}
        return cls(campaign_id, markers, [hour_from_key(key) for key in sorted(keys)])

    def documents(self, counter_shards: int) -> int:
        return 1 + counter_shards * (1 + len(self.hours)) + len({_day(hour) for hour in self.hours})

    def refs(self, db: firestore.Client, counter_shards: int) -> list[firestore.DocumentReference]:
        """The campaign, its shards, the touched hours' buckets and their days: read together."""
        refs = [campaign_ref(db, self.campaign_id)]
        refs += [shard_ref(db, self.campaign_id, k) for k in range(counter_shards)]
        refs += [hourly_ref(db, self.campaign_id, hour, k) for hour in self.hours for k in range(counter_shards)]
        refs += [day_ref(db, self.campaign_id, day) for day in sorted({_day(hour) for hour in self.hours})]
        return refs


def _day(hour: datetime) -> datetime:
    return hour.replace(hour=0)


def _by_campaign(markers: list[Any]) -> dict[int, list[Any]]:
    groups: dict[int, list[Any]] = {}
    for marker in markers:
        groups.setdefault(int(marker.id.partition("-")[0]), []).append(marker)
    return groups


def _counters(values: dict[str, Any]) -> Counters:
    return {name: int(values.get(name, 0)) for name in COUNTER_FIELDS}


def advance_as_of(db: firestore.Client, moment: datetime) -> datetime:
    """Set ``aggregator/state.as_of`` to ``moment`` unless it is already later; returns what is stored."""
    ref = state_ref(db)
    for _ in range(_PRECONDITION_RETRIES):
        snapshot = ref.get(timeout=CALL_TIMEOUT_SECONDS)
        stored = data_of(snapshot).get(AS_OF) if snapshot.exists else None
        if stored is not None and stored >= moment:
            return datetime.fromtimestamp(stored.timestamp(), timezone.utc)
        try:
            if snapshot.exists:
                ref.update({AS_OF: moment}, option=db.write_option(last_update_time=snapshot.update_time),
                           timeout=CALL_TIMEOUT_SECONDS)
            else:
                ref.create({AS_OF: moment}, timeout=CALL_TIMEOUT_SECONDS)
        except (gexc.FailedPrecondition, gexc.AlreadyExists):
            continue  # another run moved it meanwhile; read again
        return moment
    raise RuntimeError("as_of kept changing under this run")


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
        markers = dirty.where(filter=firestore.FieldFilter(_NAME, ">=", dirty.document(f"{campaign_id}-"))).where(
            filter=firestore.FieldFilter(_NAME, "<", dirty.document(f"{campaign_id}.")))
        for query in [*campaign_ref(self.db, campaign_id).collections(timeout=CALL_TIMEOUT_SECONDS), markers]:
            while True:
                budget = self.max_documents - result.deleted
                if budget <= 0:
                    return False
                page = query.select([]).limit(min(budget, _WRITE_BATCH))
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


class CampaignBackfill:
    """Gives campaigns written before ``targets`` or ``status`` existed the fields the list filters on, once.

    The admin's list queries ``status`` (archived campaigns are left out unless asked for) and the
    platform filter ``targets``; a campaign without them would never match. Walks every campaign by
    name, a page at a time until ``deadline``, its progress kept in ``aggregator/state``; once through,
    it costs one read per run.
    """

    def __init__(self, db: firestore.Client, page_size: int = _BACKFILL_PAGE) -> None:
        self.db = db
        self.page_size = page_size

    def run(self, deadline: float) -> int:
        """Campaigns given a missing field in this run."""
        progress = data_of(state_ref(self.db).get(timeout=CALL_TIMEOUT_SECONDS)).get(_BACKFILL) or {}
        backfilled = 0
        while not progress.get("done") and time.monotonic() < deadline:
            query = self.db.collection(CAMPAIGNS).order_by(_NAME).limit(self.page_size)
            if progress.get("after"):
                query = query.start_after({_NAME: self.db.collection(CAMPAIGNS).document(progress["after"])})
            campaigns = list(query.stream(timeout=CALL_TIMEOUT_SECONDS))
            batch, missing = self.db.batch(), 0
            for campaign in campaigns:
                fields = _missing_filter_fields(data_of(campaign))
                if fields:
                    option = self.db.write_option(last_update_time=campaign.update_time)
                    batch.update(campaign.reference, fields, option=option)
                    missing += 1
            if missing:
                try:
                    batch.commit(timeout=CALL_TIMEOUT_SECONDS)
                except (gexc.FailedPrecondition, gexc.NotFound):
                    return backfilled  # one was edited or deleted meanwhile: this page again next run
            backfilled += missing
            progress = {"done": True} if len(campaigns) < self.page_size else {"after": campaigns[-1].id}
            state_ref(self.db).set({_BACKFILL: progress}, merge=True, timeout=CALL_TIMEOUT_SECONDS)
        return backfilled


def _missing_filter_fields(data: dict[str, Any]) -> dict[str, Any]:
    """What a campaign lacks of the fields the list filters on, as the admin writes them."""
    fields: dict[str, Any] = {}
    if TARGETS not in data:
        fields[TARGETS] = targets_of(data.get("platforms", ()))
    if STATUS not in data:
        fields[STATUS] = ACTIVE
    return fields
