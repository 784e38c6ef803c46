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
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from google.cloud import firestore, pubsub_v1
from upkeep import DeletionSweeper, RefreshResult, SweepResult, TargetsBackfill, TotalsRefresher, advance_as_of

from shared.config import AGGREGATE_MODE, PROJECT, ConfigError, Settings
from shared.counting import ClickFolder, Delivery, FoldResult
from shared.logs import get_logger
from shared.models import rfc3339
from shared.store import read_as_of

log = get_logger("aggregate")

AGGREGATE_MODES = ("scheduled", "event", "both")

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
        result, pulled, _ = self.drain_fully()
        return result, pulled

    def drain_fully(self) -> tuple[FoldResult, int, bool]:
        """As :meth:`drain`, and whether it ended on an empty backlog with every commit made."""
        total, pulled = FoldResult(), 0
        deadline = time.monotonic() + self.max_seconds
        backlog_left = True
        while backlog_left:
            if time.monotonic() >= deadline:
                return total, pulled, False
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
                return total, pulled, False
        return total, pulled, True

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


@dataclass
class RunReport:
    started: datetime
    result: FoldResult
    pulled: int
    drained: bool
    """The backlog was emptied without a failed commit (always so when this run does not drain)."""
    refresh: RefreshResult
    sweep: SweepResult
    backfilled: int
    """Campaigns given their ``targets`` map by this run."""
    as_of: datetime | None
    """``aggregator/state.as_of`` after this run; it moved to ``started`` if the run was complete."""

    def summary(self) -> dict[str, Any]:
        return {
            "pulled": self.pulled, "counted": self.result.counted, "duplicates": self.result.duplicates,
            "poison": self.result.poison, "failed": len(self.result.failed),
            "totals_refreshed": self.refresh.campaigns, "totals_complete": self.refresh.complete,
            "deleted_documents": self.sweep.deleted, "deletions_done": len(self.sweep.campaigns),
            "targets_backfilled": self.backfilled,
            "as_of": rfc3339(self.as_of) if self.as_of else None,
        }


@dataclass
class ScheduledRun:
    """The scheduled aggregate run: drain (unless in event mode), refresh totals, sweep deletions."""

    drainer: Drainer | None
    refresher: TotalsRefresher
    sweeper: DeletionSweeper
    backfill: TargetsBackfill

    def run(self) -> RunReport:
        started = datetime.now(timezone.utc)
        result, pulled, drained = FoldResult(), 0, True
        if self.drainer is not None:
            result, pulled, drained = self.drainer.drain_fully()
        refresh = self.refresher.refresh()
        db = self.refresher.db
        as_of = advance_as_of(db, started) if drained and refresh.complete else read_as_of(db)
        return RunReport(started, result, pulled, drained, refresh, self.sweeper.sweep(), self.backfill.run(), as_of)


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


def build_scheduled_run(settings: Settings, folder: ClickFolder) -> ScheduledRun:
    if settings.aggregate_mode not in AGGREGATE_MODES:
        raise ConfigError(f"{AGGREGATE_MODE} must be one of {', '.join(AGGREGATE_MODES)}, "
                          f"not {settings.aggregate_mode!r}")
    db = folder.db
    return ScheduledRun(
        None if settings.aggregate_mode == "event" else build_drainer(settings, folder),
        TotalsRefresher(db, settings.counter_shards, settings.totals_max_seconds),
        DeletionSweeper(db, timedelta(seconds=settings.delete_grace_seconds),
                        settings.delete_max_documents),
        TargetsBackfill(db),
    )
