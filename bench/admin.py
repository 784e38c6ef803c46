"""What the admin's reads cost with many campaigns: document reads and latency per call.

    python -m bench.admin [--campaigns 10000] [--repeat 20]

Starts its own emulators (or reuses the pair named by ``FIRESTORE_EMULATOR_HOST``
and ``PUBSUB_EMULATOR_HOST``, wiping Firestore), writes the campaigns straight
to Firestore in batches (as ``CampaignStore.create`` shapes them), gives some of
them counter shards, totals and 31 days of hourly counts as the scheduled
refresh leaves them (a campaign clicked every hour), and then times the store's
reads as the admin API makes them. Reads are counted at the Firestore client's transport
(bench/reads.py); latency is against the local emulator, so it shows the
shape of the cost, not production figures. It prints figures, not a verdict.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from google.cloud import firestore  # noqa: E402

from bench.reads import ReadCounter  # noqa: E402
from local import emulators  # noqa: E402
from shared import config  # noqa: E402
from shared.ids import CampaignIds  # noqa: E402
from shared.models import zero_counters  # noqa: E402
from shared.platforms import COUNTER_FIELDS, PLATFORMS  # noqa: E402
from shared.store import (  # noqa: E402
    DAY_HOURS,
    TOTALS,
    CampaignStore,
    campaign_ref,
    day_ref,
    new_campaign_document,
    shard_ref,
    state_ref,
)

SHARDS = config.Settings().counter_shards
BATCH = 500  # Firestore's limit for one batched write
PLATFORM_SETS = [list(s) for size in range(len(PLATFORMS), 0, -1) for s in combinations(PLATFORMS, size)]
STATS_DAYS = 30


@contextmanager
def firestore_emulator() -> Iterator[str]:
    """The project of a Firestore emulator: the one the environment names (wiped), or a new pair."""
    host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if host and os.environ.get("PUBSUB_EMULATOR_HOST"):
        project = os.environ.get(config.PROJECT) or emulators.DEFAULT_PROJECT
        emulators.wipe_firestore(host, project)
        yield project
        return
    with emulators.running() as env:
        os.environ.update(env)
        yield env[config.PROJECT]


def write_all(db: firestore.Client, writes: Iterator[tuple[firestore.DocumentReference, dict[str, Any]]]) -> int:
    batch, pending, total = db.batch(), 0, 0
    for ref, document in writes:
        batch.set(ref, document)
        pending += 1
        if pending == BATCH:
            batch.commit()
            total += pending
            batch, pending = db.batch(), 0
    if pending:
        batch.commit()
        total += pending
    return total


def seed(db: firestore.Client, count: int, clicked: int, now: datetime) -> list[int]:
    """``count`` campaigns, one a millisecond apart, newest first; the first ``clicked`` have counters."""
    ids = [1_000_000_000 + i for i in range(count)]

    def campaigns() -> Iterator[tuple[firestore.DocumentReference, dict[str, Any]]]:
        for i, campaign_id in enumerate(ids):
            values = {"redirect_url": f"https://landing.example.com/c/{campaign_id}",
                      "platforms": PLATFORM_SETS[i % len(PLATFORM_SETS)]}
            document = new_campaign_document(values, now - timedelta(milliseconds=i))
            if i < clicked:
                document[TOTALS] = {name: SHARDS * 24 * (STATS_DAYS + 1) for name in COUNTER_FIELDS}
            yield campaign_ref(db, campaign_id), document

    def counters() -> Iterator[tuple[firestore.DocumentReference, dict[str, Any]]]:
        # The hourly bucket shards are left out: no admin read touches them, only the refresh.
        first_day = (now - timedelta(days=STATS_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
        hour = dict.fromkeys(COUNTER_FIELDS, SHARDS)
        for campaign_id in ids[:clicked]:
            for shard in range(SHARDS):
                yield shard_ref(db, campaign_id, shard), dict.fromkeys(COUNTER_FIELDS, 24 * (STATS_DAYS + 1))
            for d in range(STATS_DAYS + 1):
                day = first_day + timedelta(days=d)
                yield day_ref(db, campaign_id, day), {"day": day, DAY_HOURS: {f"h{h:02}": hour for h in range(24)}}

    started = time.monotonic()
    written = write_all(db, campaigns())
    written += write_all(db, counters())
    state_ref(db).set({"as_of": now})
    print(f"seeded: {count} campaigns, {clicked} of them with {SHARDS} counter shards, totals and "
          f"{STATS_DAYS + 1} days of hourly counts (every hour clicked); {written} documents in "
          f"{time.monotonic() - started:.1f} s", flush=True)
    return ids


def by_day(series: dict[datetime, dict[str, int]]) -> dict[datetime, dict[str, int]]:
    """Hours to UTC days, as the stats endpoint sums them."""
    days: dict[datetime, dict[str, int]] = {}
    for hour, counts in series.items():
        day = days.setdefault(hour.replace(hour=0), zero_counters())
        for name in COUNTER_FIELDS:
            day[name] += counts[name]
    return days


def measure(name: str, call: Callable[[], Any], counter: ReadCounter, repeat: int) -> tuple[int, float]:
    """Reads per call (the same every call, else the spread shows) and latencies; returns (reads, p50 ms)."""
    reads, latencies = [], []
    for _ in range(repeat):
        counter.take()
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1000)
        reads.append(counter.take())
    p50 = statistics.median(latencies)
    p90 = statistics.quantiles(latencies, n=10)[-1] if len(latencies) > 1 else latencies[0]
    spread = f"{min(reads)}" if min(reads) == max(reads) else f"{min(reads)}..{max(reads)}"
    print(f"  {name:<44} reads={spread:<7} p50={p50:8.1f} ms  p90={p90:8.1f} ms  (n={repeat})", flush=True)
    return max(reads), p50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.admin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--clicked", type=int, default=50, help="campaigns given counters and 31 days of counts")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    with firestore_emulator() as project:
        db = firestore.Client(project=project)
        now = datetime.now(timezone.utc)
        ids = seed(db, args.campaigns, args.clicked, now)
        store = CampaignStore(db, SHARDS, CampaignIds(os.urandom(32)))  # reads only: no id is issued
        counter = ReadCounter(db)
        deep, pages = store.list_page([], 100, None), 1
        while pages < 50 and deep.next_cursor and (pages + 1) * 100 < args.campaigns:
            deep, pages = store.list_page([], 100, deep.next_cursor), pages + 1
        wanted = ["Android", "IPhone"]
        hot = ids[0]
        start = (now - timedelta(days=STATS_DAYS)).replace(minute=0, second=0, microsecond=0)

        def stats() -> None:
            by_day(store.hourly(hot, start, now))
            store.stats_as_of(hot)

        print(f"calls ({args.campaigns} campaigns, {SHARDS} counter shards, Firestore emulator):", flush=True)
        page, _ = measure("page of 100, newest", lambda: store.list_page([], 100, None), counter, args.repeat)
        measure(f"page of 100, {pages} pages in (cursor)", lambda: store.list_page([], 100, deep.next_cursor),
                counter, args.repeat)
        filtered, _ = measure("page of 100, platforms=Android,IPhone",
                              lambda: store.list_page(wanted, 100, None), counter, args.repeat)
        one, _ = measure("one campaign", lambda: store.get(hot), counter, args.repeat)
        stats_reads, _ = measure(f"{STATS_DAYS}-day stats (hours -> days)", stats, counter, args.repeat)
        every, _ = measure("every campaign (no limit)", lambda: sum(1 for _ in store.stream([])), counter,
                           max(2, args.repeat // 10))
    print(f"admin: campaigns={args.campaigns} page_reads={page} filtered_page_reads={filtered} "
          f"campaign_reads={one} stats_{STATS_DAYS}d_reads={stats_reads} all_reads={every}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
