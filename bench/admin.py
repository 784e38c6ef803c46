"""What the admin's reads cost with many campaigns: document reads and latency per call, and memory.

    python -m bench.admin [--campaigns 10000] [--repeat 20] [--memory-campaigns 10000,50000]

Starts its own emulators (or reuses the pair named by ``FIRESTORE_EMULATOR_HOST``
and ``PUBSUB_EMULATOR_HOST``, wiping Firestore), writes the campaigns straight
to Firestore in batches (as ``CampaignStore.create`` shapes them), gives some of
them counter shards, totals and 31 days of hourly counts as the scheduled
refresh leaves them (a campaign clicked every hour), and then times the store's
reads as the admin API makes them. Reads are counted at the Firestore client's transport
(bench/reads.py); latency is against the local emulator, so it shows the
shape of the cost, not production figures. It prints figures, not a verdict.

Then, for memory, it adds campaigns up to each of ``--memory-campaigns`` in
turn and at each starts the admin function as its own process, as Cloud Run
functions serves it (``functions-framework --source functions/admin/main.py
--target admin``: gunicorn, one worker), lists every campaign through it as
JSON and as CSV, checks that every campaign came, and reads the worker's peak
resident memory (``VmHWM`` in ``/proc``), beside what it held before listing.
The last line sums it up: ``admin_memory: campaigns=... peak_rss_mib=...`` per size.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from google.cloud import firestore  # noqa: E402

from bench.reads import ReadCounter  # noqa: E402
from local import emulators  # noqa: E402
from local.stack import wait_serving  # noqa: E402
from shared import config  # noqa: E402
from shared.ids import CampaignIds  # noqa: E402
from shared.models import zero_counters  # noqa: E402
from shared.platforms import COUNTER_FIELDS, PLATFORMS  # noqa: E402
from shared.store import (  # noqa: E402
    DAY_HOURS,
    MAX_WRITES_PER_COMMIT,
    TOTALS,
    CampaignStore,
    campaign_ref,
    day_ref,
    new_campaign_document,
    shard_ref,
    state_ref,
)
from shared.utc import hour_of  # noqa: E402

SHARDS = config.Settings().counter_shards
PLATFORM_SETS = [list(s) for size in range(len(PLATFORMS), 0, -1) for s in combinations(PLATFORMS, size)]
STATS_DAYS = 30
FIRST_ID = 1_000_000_000
AUTH = ("admin", secrets.token_urlsafe(16))


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
        if pending == MAX_WRITES_PER_COMMIT:
            batch.commit()
            total += pending
            batch, pending = db.batch(), 0
    if pending:
        batch.commit()
        total += pending
    return total


def campaign_documents(
    db: firestore.Client, first: int, end: int, now: datetime, clicked: int = 0
) -> Iterator[tuple[firestore.DocumentReference, dict[str, Any]]]:
    """Campaigns ``first`` to ``end`` (exclusive) of the bench, one a millisecond older than the one before;
    those before ``clicked`` with totals."""
    for i in range(first, end):
        campaign_id = FIRST_ID + i
        values = {"redirect_url": f"https://landing.example.com/c/{campaign_id}",
                  "platforms": PLATFORM_SETS[i % len(PLATFORM_SETS)]}
        document = new_campaign_document(values, now - timedelta(milliseconds=i))
        if i < clicked:
            document[TOTALS] = {name: SHARDS * 24 * (STATS_DAYS + 1) for name in COUNTER_FIELDS}
        yield campaign_ref(db, campaign_id), document


def seed(db: firestore.Client, count: int, clicked: int, now: datetime) -> list[int]:
    """``count`` campaigns, newest first; the first ``clicked`` have counters."""
    ids = [FIRST_ID + i for i in range(count)]

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
    written = write_all(db, campaign_documents(db, 0, count, now, clicked))
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


@dataclass(frozen=True)
class AdminServer:
    process: subprocess.Popen[bytes]
    url: str

    def worker_mib(self, field: str) -> float:
        """A field of the gunicorn worker's /proc status (VmRSS, VmHWM), where the function runs, in MiB."""
        [worker] = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        for line in Path(f"/proc/{worker}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc/{worker}/status")


@contextmanager
def admin_function(project: str, log_path: Path) -> Iterator[AdminServer]:
    """The admin function in a process of its own, as Cloud Run functions serves it: one gunicorn worker."""
    port = emulators.free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), config.PROJECT: project, config.AUTH_USER: AUTH[0],
           config.AUTH_PASSWORD: AUTH[1], config.CAMPAIGN_ID_KEY: secrets.token_urlsafe(32)}
    command = [str(Path(sys.executable).with_name("functions-framework")), "--source",
               str(ROOT / "functions/admin/main.py"), "--target", "admin", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, cwd=ROOT / "functions/admin", stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_serving(port, process)
        yield AdminServer(process, f"http://127.0.0.1:{port}")
    finally:
        emulators.stop_process_group(process)


def listed(body: bytes, form: str) -> int:
    """Campaigns in a whole list as the admin answers it."""
    if form == "json":
        return len(json.loads(body))
    return sum(1 for _ in csv.reader(io.StringIO(body.decode(), newline=""))) - 1  # the header row


def memory(project: str, campaigns: int, log_dir: Path) -> float:
    """The admin worker's peak resident memory (MiB) after listing every campaign as JSON and as CSV."""
    with admin_function(project, log_dir / f"admin-{campaigns}.log") as server:
        # A first request makes the Firestore client, as on any instance that has answered once.
        requests.get(f"{server.url}/campaigns?limit=1", auth=AUTH, timeout=60).raise_for_status()
        before = server.worker_mib("VmRSS")
        sizes = []
        for form in ("json", "csv"):
            started = time.monotonic()
            with requests.get(f"{server.url}/campaigns?format={form}", auth=AUTH, stream=True, timeout=600) as answer:
                answer.raise_for_status()
                body = b"".join(answer.iter_content(1 << 20))
            seconds = time.monotonic() - started
            if listed(body, form) != campaigns:
                raise RuntimeError(f"the {form} list held {listed(body, form)} campaigns, not {campaigns}")
            sizes.append(f"{form.upper()} {len(body) / 1e6:.1f} MB in {seconds:.1f} s")
        peak = server.worker_mib("VmHWM")
    print(f"  {campaigns:>6} campaigns: worker {before:.1f} MiB before listing, peak {peak:.1f} MiB; "
          f"{', '.join(sizes)}", flush=True)
    return peak


def counts(text: str) -> list[int]:
    return sorted(int(n) for n in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.admin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--clicked", type=int, default=50, help="campaigns given counters and 31 days of counts")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--memory-campaigns", type=counts, default=[10_000, 50_000],
                        help="campaigns to measure the admin process's memory at, none fewer than --campaigns")
    args = parser.parse_args(argv)
    if args.memory_campaigns[0] < args.campaigns:
        parser.error("--memory-campaigns must be at least --campaigns: campaigns are only ever added")
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
        start = hour_of(now - timedelta(days=STATS_DAYS))

        def stats() -> None:
            by_day(store.hourly(hot, start, now).counts)
            store.as_of()

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

        print("memory of the admin function listing every campaign (functions-framework, one worker):", flush=True)
        peaks, have = {}, args.campaigns
        log_dir = Path(tempfile.mkdtemp(prefix="o7tracker-bench-admin-"))
        for campaigns in args.memory_campaigns:
            write_all(db, campaign_documents(db, have, campaigns, now))
            have = campaigns
            peaks[campaigns] = memory(project, campaigns, log_dir)
    print(f"admin: campaigns={args.campaigns} page_reads={page} filtered_page_reads={filtered} "
          f"campaign_reads={one} stats_{STATS_DAYS}d_reads={stats_reads} all_reads={every}", flush=True)
    print("admin_memory: " + " ".join(f"campaigns={n} peak_rss_mib={mib:.1f}" for n, mib in peaks.items()),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
