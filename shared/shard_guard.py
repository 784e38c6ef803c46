"""``COUNTER_SHARDS`` can only ever grow.

Clicks land on counter shards ``0..n-1`` of a campaign and are read back by
summing those ``n`` documents, so lowering ``n`` would silently drop whatever
the higher shards hold. The highest count any function has run with is kept
in Firestore (``meta/counter_shards``). The functions that read or write
counters (admin and aggregate) check theirs against it at cold start: a lower
value stops the instance with a :class:`ConfigError`, a higher one is
recorded. The track function never touches counters, so its cold start
spends no Firestore call on this.
"""

from __future__ import annotations

import time

from google.api_core import exceptions as gexc
from google.api_core import retry as retries
from google.cloud import firestore

from shared.config import COUNTER_SHARDS, ConfigError, Settings
from shared.logs import get_logger

log = get_logger("shard_guard")

META = "meta"
DOCUMENT = "counter_shards"
FIELD = "highest"
# The whole check, a read and at most one write, retries included: a cold
# start must not hang on an unwell Firestore.
DEADLINE_SECONDS = 10.0


class ShardCheckUnavailable(RuntimeError):
    """Firestore did not answer the check in time; the instance does not start."""


def check_counter_shards(db: firestore.Client, shards: int, *, deadline_seconds: float = DEADLINE_SECONDS) -> int:
    """Record ``shards`` as used, or refuse it when more were used before; the highest recorded.

    The record only grows, through Firestore's atomic ``maximum`` transform,
    so instances starting at once with different values cannot lower it.
    """
    ref = db.document(META, DOCUMENT)
    end = time.monotonic() + deadline_seconds
    try:
        snapshot = ref.get(timeout=_left(end), retry=retries.Retry(timeout=_left(end)))
        highest = int((snapshot.to_dict() or {}).get(FIELD, 0))
        if highest < shards:
            result = ref.set(
                {FIELD: firestore.Maximum(shards)}, merge=True,
                timeout=_left(end), retry=retries.Retry(timeout=_left(end)),
            )
            highest = int(result.transform_results[0].integer_value)
            if highest == shards:
                log.info("counter shard count recorded", extra={"counter_shards": shards})
    except (gexc.GoogleAPIError, TimeoutError) as exc:
        raise ShardCheckUnavailable(
            f"could not check {COUNTER_SHARDS}={shards} against the highest ever used "
            f"(Firestore {META}/{DOCUMENT}) within {deadline_seconds:g}s: {exc!r}"
        ) from exc
    if highest > shards:
        raise ConfigError(
            f"{COUNTER_SHARDS}={shards} is lower than {highest}, the highest this project has counted with: "
            f"counts on shards {shards}..{highest - 1} would be lost. Set {COUNTER_SHARDS}={highest} or more."
        )
    return highest


def guard_counter_shards(settings: Settings) -> None:
    """The cold-start check, with a Firestore client of its own, closed after.

    The function's own clients stay lazy and injectable; this one lives for a
    read (and one write when the count grows).
    """
    db = firestore.Client(project=settings.project)
    try:
        check_counter_shards(db, settings.counter_shards)
    finally:
        db.close()  # type: ignore[no-untyped-call]  # firestore leaves Client.close unannotated


def _left(end: float) -> float:
    """Seconds left before ``end``; none left is a timeout before the call is even made."""
    left = end - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline spent")
    return left
