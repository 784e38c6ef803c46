"""The legacy totals: what the version before the journal left counted, summed for readers.

That version (before :mod:`shared.counting`) counted into sharded counters:
``campaigns/{id}/counter_shards/*`` and hourly buckets, marked ``dirty/{id}-{k}``
in the same commit, and summed into ``campaigns/{id}.totals`` and ``days/*.hours``
by this refresh, which readers add to the journal's ``counts``.
:class:`TotalsRefresher` finishes what such a deployment left marked when it was
upgraded; with no marker left it costs one read a run. It walks the markers
once, and for their campaigns reads the campaign document, all its shards, the
marked hours' bucket shards and their day documents in one read-only
transaction (one consistent snapshot), then writes the sums into the campaign
document and the day documents

* only if they differ from, and dominate, the stored ones (shards only grow, so
  a consistent sum never goes down: a smaller one means something is wrong);
* with the snapshot's update time as precondition, so two runs racing cannot
  write an older sum over a newer one, and a deleted campaign is never recreated.

A marker is then deleted only if unchanged since it was read (its update-time
precondition; every marking increments it): a commit after the snapshot leaves
its marker for the next run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.counting import CALL_TIMEOUT_SECONDS
from shared.logs import get_logger
from shared.models import Counters, zero_counters
from shared.platforms import COUNTER_FIELDS
from shared.store import (
    DAY_HOURS,
    DIRTY,
    DOCUMENT_NAME,
    MARKED_HOURS,
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
    sum_shards,
)

log = get_logger("legacy_totals")

_T = TypeVar("_T")

_MARKER_PAGE = 300
_READ_BATCH_DOCUMENTS = 300  # documents per consistent read, about: campaigns, shards, buckets, days
_PRECONDITION_RETRIES = 3


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
            query = self.db.collection(DIRTY).order_by(DOCUMENT_NAME).limit(page_size)
            if after is not None:
                query = query.start_after({DOCUMENT_NAME: after})
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
        return _grouped_by_size(plans, lambda plan: plan.documents(self.counter_shards), _READ_BATCH_DOCUMENTS)

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


def _grouped_by_size(items: Iterable[_T], size: Callable[[_T], int], limit: int) -> list[list[_T]]:
    """Consecutive items in groups whose sizes add up to at most ``limit`` (an item larger than
    ``limit`` makes a group of its own)."""
    groups: list[list[_T]] = [[]]
    total = 0
    for item in items:
        weight = size(item)
        if groups[-1] and total + weight > limit:
            groups.append([])
            total = 0
        groups[-1].append(item)
        total += weight
    return [group for group in groups if group]
