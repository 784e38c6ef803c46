"""Accuracy soak: many clicks, two aggregators at once, every count checked.

    python -m bench.soak --clicks 100000

Starts its own Firestore and Pub/Sub emulators (or reuses the pair named by
``FIRESTORE_EMULATOR_HOST`` and ``PUBSUB_EMULATOR_HOST``, wiping Firestore
first), creates campaigns, publishes clicks with bots, duplicates and poison
events, and drains them with two aggregators racing on one subscription. Every
campaign's counters and hourly buckets, and the totals and hourly counts the
admin shows once refreshed as the scheduled run refreshes them, are then
compared with a ground truth kept in memory, computed here independently of
``shared.counting``. Last, one
track function instance is put under HTTP load, so the fold rate can be set
against the click rate one instance produces.

It prints figures, the last line a one-line summary, and exits 0 only when
every count is exact. This is a soak, not a test: it is not run by ./test.sh.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import combinations
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parent.parent
# Cloud Functions runs each function from its own directory, so its modules import one
# another by bare name (``from aggregation import ...``): put those directories on the path.
for _function in ("aggregate", "track"):
    sys.path.insert(0, str(ROOT / "functions" / _function))
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from aggregation import Drainer, RetryLater, build_drainer, fold_pushed  # noqa: E402
from google.api_core import exceptions as gexc  # noqa: E402
from google.cloud import firestore, pubsub_v1  # noqa: E402
from upkeep import RefreshResult, TotalsRefresher  # noqa: E402

from bench import wrk  # noqa: E402
from local import emulators  # noqa: E402
from local.stack import wait_serving  # noqa: E402
from shared import config  # noqa: E402
from shared.counting import ClickFolder, Delivery, FoldResult  # noqa: E402
from shared.events import ClickEvent  # noqa: E402
from shared.platforms import PLATFORMS  # noqa: E402
from shared.store import CAMPAIGNS, CampaignStore  # noqa: E402
from shared.store import COUNTER_SHARDS as SHARD_COLLECTION  # noqa: E402

SHARD_COUNT = config.Settings().counter_shards  # as deployed
DRAIN_BATCH_SIZE = 1000
PUSH_PULL_SIZE = 100
DEDUP_RETENTION = timedelta(days=8)
TRACK_SERVER_THREADS = 32
# Not a real host, so a redirect to it is never mistaken for a counted click.
FALLBACK_URL = "http://fallback.soak.invalid/"
# The start of the track function's log lines for an unconfirmed click event (failed or outcome unknown).
PUBLISH_FAILED = "click event publish "
# Load as people click, not as a tool would: a tool's User-Agent is classified as a bot.
BROWSER_USER_AGENT = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
                      "(KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36")

# The counter fields as the API documents them, spelled out here rather than taken from
# shared.platforms, so that a wrongly named field shows up as a mismatch.
TOTAL = "click_count"
BOTS = "bot_click_count"
PLATFORM_COUNTER = {platform: f"{platform.lower()}_click_count" for platform in PLATFORMS}
EXPECTED_FIELDS = (TOTAL, *PLATFORM_COUNTER.values(), BOTS)

# Every non-empty platform set, the full set first (it goes to the hot campaign).
PLATFORM_SETS: list[tuple[str, ...]] = [
    subset for size in range(len(PLATFORMS), 0, -1) for subset in combinations(PLATFORMS, size)
]

Counts = dict[str, int]


# --- ground truth -------------------------------------------------------------------------


class GroundTruth:
    """The exact counters each campaign must end with, from the clicks as generated."""

    def __init__(self) -> None:
        self._totals: defaultdict[int, Counter[str]] = defaultdict(Counter)
        self._hourly: defaultdict[int, defaultdict[datetime, Counter[str]]] = defaultdict(
            lambda: defaultdict(Counter)
        )

    def add(self, campaign_id: int, platform: str | None, bot: bool, ts: datetime) -> None:
        if platform is None and not bot:
            raise ValueError("only a bot click may come without a platform")
        utc = ts.astimezone(timezone.utc)
        hour = datetime(utc.year, utc.month, utc.day, utc.hour, tzinfo=timezone.utc)
        for bucket in (self._totals[campaign_id], self._hourly[campaign_id][hour]):
            # A bot click counts only as a bot click, platform or not: not in the total, not per platform.
            if bot:
                bucket[BOTS] += 1
            else:
                bucket[TOTAL] += 1
                bucket[PLATFORM_COUNTER[str(platform)]] += 1

    def totals(self, campaign_id: int) -> Counts:
        return _all_fields(self._totals.get(campaign_id, Counter()))

    def hourly(self, campaign_id: int) -> dict[datetime, Counts]:
        return {hour: _all_fields(c) for hour, c in self._hourly.get(campaign_id, {}).items()}

    def hours(self) -> set[datetime]:
        return {hour for series in self._hourly.values() for hour in series}


def _all_fields(counts: Counter[str]) -> Counts:
    return {name: counts[name] for name in EXPECTED_FIELDS}


# --- campaigns and the click workload -----------------------------------------------------


@dataclass(frozen=True)
class CampaignSpec:
    id: int
    platforms: tuple[str, ...]
    destinations: dict[str, str]
    """Where the track function must redirect a click, per targeted platform."""


def create_campaigns(store: CampaignStore, count: int) -> list[CampaignSpec]:
    """``count`` campaigns over every platform set; the first, the hot one, targets all platforms."""
    campaigns = []
    for i in range(count):
        platforms = PLATFORM_SETS[i % len(PLATFORM_SETS)]
        redirect_url = f"https://soak.example/c{i}"
        # Some campaigns send one platform elsewhere, so per-platform destinations are exercised.
        platform_urls = {platforms[0]: f"{redirect_url}/{platforms[0].lower()}"} if i % 3 == 1 else {}
        created = store.create(
            {"redirect_url": redirect_url, "platforms": list(platforms), "platform_urls": platform_urls}
        )
        destinations = {p: platform_urls.get(p, redirect_url) for p in platforms}
        campaigns.append(CampaignSpec(created.id, platforms, destinations))
    return campaigns


@dataclass(frozen=True)
class Mix:
    clicks: int
    hot_share: float
    bot_share: float
    duplicate_share: float
    poison_share: float
    hours: float


@dataclass
class Workload:
    payloads: list[bytes]
    """Every message to publish, shuffled: clicks, duplicates and poison interleaved."""
    truth: GroundTruth
    sent: int
    bots: int
    duplicates: int
    poison: int


def make_workload(campaigns: Sequence[CampaignSpec], mix: Mix, rng: random.Random) -> Workload:
    now = datetime.now(timezone.utc)
    truth = GroundTruth()
    # Traffic arrives in click order, so a batch spans an hour or two of buckets, not all of them.
    clicks = sorted((random_click(campaigns, mix, rng, now) for _ in range(mix.clicks)), key=lambda e: e.ts)
    for event in clicks:
        truth.add(event.campaign_id, event.platform, event.bot, event.ts)
    payloads = [event.encode() for event in clicks]
    # A duplicate is the very same bytes published again, as a publish retry or a redelivery makes it.
    duplicates = [payloads[rng.randrange(len(payloads))] for _ in range(round(mix.clicks * mix.duplicate_share))]
    known = {c.id for c in campaigns}
    poison = [poison_payload(i, rng, known, now) for i in range(round(mix.clicks * mix.poison_share))]
    messages = list(payloads)
    for extra in duplicates + poison:  # anywhere in the stream, as retries and bad producers put them
        messages.insert(rng.randrange(len(messages) + 1), extra)
    return Workload(messages, truth, len(clicks), sum(c.bot for c in clicks), len(duplicates), len(poison))


def random_click(campaigns: Sequence[CampaignSpec], mix: Mix, rng: random.Random, now: datetime) -> ClickEvent:
    hot, others = campaigns[0], campaigns[1:]
    campaign = hot if not others or rng.random() < mix.hot_share else rng.choice(others)
    bot = rng.random() < mix.bot_share
    # Half the bots name no targeted platform (a crawler's preview), which only a bot click may do.
    platform = None if bot and rng.random() < 0.5 else rng.choice(campaign.platforms)
    return ClickEvent.new(
        campaign.id,
        platform,
        user_agent="bench.soak",
        bot=bot,
        # Spread over the last hours so that several hourly buckets fill.
        now=now - timedelta(seconds=rng.uniform(0, mix.hours * 3600)),
    )


def poison_payload(i: int, rng: random.Random, known: set[int], now: datetime) -> bytes:
    """In turn: malformed JSON, an event missing a field, an event for a campaign that does not exist."""
    kind = i % 3
    if kind == 0:
        return b'{"click_id": "' + uuid.uuid4().hex.encode()  # cut short
    if kind == 1:
        fields = ClickEvent.new(1, rng.choice(PLATFORMS), now=now).fields()
        del fields[rng.choice(["click_id", "campaign_id", "platform", "ts"])]
        return json.dumps(fields).encode()
    unknown = rng.randrange(1, 2**53)
    while unknown in known:
        unknown = rng.randrange(1, 2**53)
    return ClickEvent.new(unknown, rng.choice(PLATFORMS), now=now).encode()


# --- Pub/Sub ------------------------------------------------------------------------------


def create_topic(project: str, topic: str) -> None:
    publisher = pubsub_v1.PublisherClient()
    with suppress(gexc.AlreadyExists):
        publisher.create_topic(name=publisher.topic_path(project, topic))


def publish_all(project: str, topic: str, payloads: Sequence[bytes]) -> float:
    """Publish with client-side batching, all futures in flight at once; returns the seconds taken."""
    settings = pubsub_v1.types.BatchSettings(max_messages=1000, max_bytes=4_000_000, max_latency=0.05)
    publisher = pubsub_v1.PublisherClient(batch_settings=settings)
    path = publisher.topic_path(project, topic)
    started = time.monotonic()
    futures = [publisher.publish(path, payload) for payload in payloads]
    for future in futures:
        future.result(timeout=300)
    elapsed = time.monotonic() - started
    publisher.stop()
    return elapsed


# --- the two aggregators ------------------------------------------------------------------


class WriteLog:
    """(when, counter document) for every counter write any aggregator committed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[tuple[float, str]] = []
        self.last_fold_end = 0.0

    def record(self, result: FoldResult) -> None:
        now = time.monotonic()
        with self._lock:
            self.records += [(now, path) for path in result.writes]
            self.last_fold_end = max(self.last_fold_end, now)

    def busiest_document(self) -> tuple[str, int]:
        """The document that took the most writes within one 1-second window, and how many."""
        by_document: defaultdict[str, list[float]] = defaultdict(list)
        for moment, path in self.records:
            by_document[path].append(moment)
        best = ("", 0)
        for path, moments in by_document.items():
            moments.sort()
            start = 0
            for end, moment in enumerate(moments):
                while moment - moments[start] >= 1.0:
                    start += 1
                if end - start + 1 > best[1]:
                    best = (path, end - start + 1)
        return best

    def shard_spread(self, campaign_id: int) -> list[int]:
        """Writes each of a campaign's counter shards took: even when sharding spreads the load."""
        spread = [0] * SHARD_COUNT
        prefix = f"{CAMPAIGNS}/{campaign_id}/{SHARD_COLLECTION}/"
        for _, path in self.records:
            if path.startswith(prefix):
                spread[int(path[len(prefix):])] += 1
        return spread


class ObservedFolder(ClickFolder):
    """A ClickFolder that logs when the counter documents it wrote were committed.

    The stamp is taken as the fold returns, after its last commit: the fold's commits are
    not observable one by one without reaching into its internals. A fold split into
    several commits (over ~500 writes) is credited at one instant, so the write rate
    found is an upper bound, exact whenever each fold is one commit or takes under a second.
    """

    def __init__(self, project: str, writes: WriteLog) -> None:
        # A client of its own per aggregator, as two function instances would have.
        super().__init__(firestore.Client(project=project), SHARD_COUNT, DEDUP_RETENTION)
        self.writes = writes
        self.folds = 0

    def fold(self, deliveries: Sequence[Delivery]) -> FoldResult:
        result = super().fold(deliveries)
        self.writes.record(result)
        self.folds += 1
        return result


class Aggregator(Protocol):
    def drain(self) -> tuple[FoldResult, int]: ...


@dataclass
class PushAggregator:
    """The event-triggered path: pulls a few messages and folds each alone through
    ``fold_pushed``, as one push delivery per invocation would."""

    folder: ClickFolder
    subscriber: pubsub_v1.SubscriberClient
    subscription_path: str

    def drain(self) -> tuple[FoldResult, int]:
        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription_path, "max_messages": PUSH_PULL_SIZE},
                timeout=2.0, retry=None,
            )
        except gexc.DeadlineExceeded:
            return FoldResult(), 0
        total, done, retry = FoldResult(), [], []
        for received in response.received_messages:
            message = received.message
            data = base64.b64encode(message.data).decode()
            envelope = {"message": {"data": data, "messageId": message.message_id}}
            try:
                total.merge(fold_pushed(self.folder, envelope))
                done.append(received.ack_id)
            except RetryLater:
                total.failed.append(message.message_id)
                retry.append(received.ack_id)
        if done:
            self.subscriber.acknowledge(subscription=self.subscription_path, ack_ids=done)
        if retry:
            self.subscriber.modify_ack_deadline(
                subscription=self.subscription_path, ack_ids=retry, ack_deadline_seconds=0
            )
        return total, len(response.received_messages)


@dataclass
class Tally:
    name: str
    folder: ObservedFolder | None = None
    result: FoldResult = field(default_factory=FoldResult)
    pulled: int = 0

    def describe(self) -> str:
        r, folds = self.result, self.folder.folds if self.folder else 0
        return (f"{self.name}: pulled={self.pulled} in {folds} folds counted={r.counted} "
                f"duplicates={r.duplicates} poison={r.poison} handed_back={len(r.failed)}")


def run_until_empty(aggregator: Aggregator, tally: Tally) -> None:
    while True:
        result, pulled = aggregator.drain()
        tally.result.merge(result)
        tally.pulled += pulled
        if pulled == 0:
            return


@dataclass
class DrainReport:
    tallies: list[Tally]
    seconds: float
    """From the start of draining to the end of the last fold (the closing empty pulls excluded)."""
    writes: WriteLog

    def total(self) -> Tally:
        total = Tally("both")
        for tally in self.tallies:
            total.result.merge(tally.result)
            total.pulled += tally.pulled
        return total


def drain_concurrently(project: str, subscription: str, second: str) -> DrainReport:
    """The scheduled drain and a second aggregator on the same subscription until it is empty."""
    writes = WriteLog()
    settings = config.Settings(
        project=project, clicks_subscription=subscription,
        aggregate_batch_size=DRAIN_BATCH_SIZE, counter_shards=SHARD_COUNT,
    )
    folders = [ObservedFolder(project, writes), ObservedFolder(project, writes)]
    first: Drainer = build_drainer(settings, folders[0])
    other: Aggregator
    if second == "drainer":
        other = build_drainer(settings, folders[1])
        tallies = [Tally("scheduled drainer A", folders[0]), Tally("scheduled drainer B", folders[1])]
    else:
        subscriber = pubsub_v1.SubscriberClient()
        other = PushAggregator(folders[1], subscriber, subscriber.subscription_path(project, subscription))
        tallies = [Tally("scheduled drainer A", folders[0]), Tally("push folder B", folders[1])]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = [pool.submit(run_until_empty, a, t) for a, t in zip((first, other), tallies, strict=False)]
        for future in running:
            future.result()  # re-raises what went wrong in the thread
    # One aggregator may hand a failed batch back just after the other saw an empty pull.
    run_until_empty(first, tallies[0])
    return DrainReport(tallies, max(writes.last_fold_end, started) - started, writes)


# --- comparing with the ground truth ------------------------------------------------------

State = dict[int, tuple[Counts, Counts, dict[datetime, Counts]]]
"""Per campaign: its counter shards summed, the totals readers see, the hourly counts readers see."""


def read_state(store: CampaignStore, campaigns: Sequence[CampaignSpec]) -> State:
    totals = store.counters([c.id for c in campaigns])
    now = datetime.now(timezone.utc)
    start, end = now - timedelta(days=30), now + timedelta(days=1)
    return {
        c.id: (dict(totals[c.id]), dict(store.get(c.id).counters),
               {_plain(hour): dict(counts) for hour, counts in store.hourly(c.id, start, end).items()})
        for c in campaigns
    }


def _plain(moment: datetime) -> datetime:
    """Firestore's timestamp type as a plain UTC datetime, not rounded: a bucket off the hour must show."""
    return datetime.fromtimestamp(moment.timestamp(), timezone.utc)


def settled_state(
    store: CampaignStore, campaigns: Sequence[CampaignSpec], attempts: int = 10
) -> tuple[State, bool]:
    """The counters once two reads a second apart agree (Firestore reads are strongly
    consistent, so this only guards against a straggling commit); False if they never did."""
    previous = read_state(store, campaigns)
    for _ in range(attempts):
        time.sleep(1.0)
        current = read_state(store, campaigns)
        if current == previous:
            return current, True
        previous = current
    return previous, False


def mismatches(state: State, campaigns: Sequence[CampaignSpec], truth: GroundTruth) -> list[str]:
    found = []
    for campaign in campaigns:
        totals, shown, hourly = state[campaign.id]
        expected = truth.totals(campaign.id)
        if totals != expected:
            found.append(f"campaign {campaign.id} totals: {difference(expected, totals)}")
        if shown != expected:
            found.append(f"campaign {campaign.id} shown totals: {difference(expected, shown)}")
        expected_hourly = truth.hourly(campaign.id)
        for hour in sorted(set(expected_hourly) | set(hourly)):
            if hourly.get(hour) != expected_hourly.get(hour):
                found.append(f"campaign {campaign.id} hour {hour.isoformat()}: "
                             f"{difference(expected_hourly.get(hour), hourly.get(hour))}")
    return found


def difference(expected: Counts | None, actual: Counts | None) -> str:
    """Only the fields that differ, as ``name expected->actual``; a missing bucket as such."""
    if expected is None or actual is None:
        return f"expected {expected or 'no bucket'}, got {actual or 'no bucket'}"
    names = sorted(set(expected) | set(actual))
    return ", ".join(f"{n} {expected.get(n)}->{actual.get(n)}" for n in names if expected.get(n) != actual.get(n))


# --- one track function instance under load -----------------------------------------------


@dataclass
class TrackReport:
    generator: str
    ok: int
    requests: int
    seconds: float
    publish_failures: int

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


@contextmanager
def track_server(env: dict[str, str], topic: str, log_path: Path) -> Iterator[int]:
    """One track instance (uvicorn, one worker, as ./run.sh serves it); yields its port."""
    port = emulators.free_port()
    server_env = {
        **os.environ, **env,
        config.CLICKS_TOPIC: topic,  # a topic of its own, so these clicks stay out of the soak's counts
        config.AUTH_PASSWORD: secrets.token_urlsafe(16),  # the gateway's admin part insists on one
        config.FALLBACK_URL: FALLBACK_URL,
        "PYTHONPATH": str(ROOT),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "local.gateway:create_gateway", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
             "--log-level", "warning", "--app-dir", str(ROOT)],
            env=server_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_serving(port, process)
        yield port
    finally:
        emulators.stop_process_group(process)


Target = tuple[str, str]
"""A track path and the Location a counted click on it must answer."""


def track_targets(campaigns: Sequence[CampaignSpec], count: int = 8) -> list[Target]:
    return [
        (f"/track/{c.id}?platform={platform}", c.destinations[platform])
        for c in campaigns[:count] for platform in c.platforms
    ]


def browser_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = BROWSER_USER_AGENT
    return session


def warm_up(port: int, targets: Sequence[Target]) -> None:
    """One click per target before timing: fills the route cache, and checks the redirects."""
    with browser_session() as session:
        for path, location in targets:
            answer = session.get(f"http://127.0.0.1:{port}{path}", allow_redirects=False, timeout=30)
            if answer.status_code != 307 or answer.headers.get("Location") != location:
                raise RuntimeError(f"track {path} answered {answer.status_code} "
                                   f"to {answer.headers.get('Location')!r}, expected 307 to {location!r}")


def python_load(port: int, targets: Sequence[Target], seconds: float, connections: int) -> tuple[int, int, float]:
    """Fallback load generator: one thread and keep-alive session per connection."""
    deadline = time.monotonic() + seconds

    def client(offset: int) -> tuple[int, int]:
        ok = sent = 0
        with browser_session() as session:
            while time.monotonic() < deadline:
                path, location = targets[(offset + sent) % len(targets)]
                answer = session.get(f"http://127.0.0.1:{port}{path}", allow_redirects=False, timeout=30)
                sent += 1
                ok += answer.status_code == 307 and answer.headers.get("Location") == location
        return ok, sent

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        results = list(pool.map(client, range(connections)))
    return sum(r[0] for r in results), sum(r[1] for r in results), time.monotonic() - started


def measure_track(
    env: dict[str, str], campaigns: Sequence[CampaignSpec], generator: str, seconds: float, connections: int,
    workdir: Path,
) -> TrackReport:
    topic = f"soak-track-{uuid.uuid4().hex[:12]}"
    create_topic(env[config.PROJECT], topic)
    log_path = workdir / "track-server.log"
    targets = track_targets(campaigns)
    with track_server(env, topic, log_path) as port:
        warm_up(port, targets)
        if generator == "wrk":
            # Counts only 307s to a targeted campaign's URL.
            load = wrk.run_wrk(port, [path for path, _ in targets], {location for _, location in targets},
                               connections, seconds, workdir, headers={"User-Agent": BROWSER_USER_AGENT})
            ok, sent, elapsed = load.ok, load.requests, load.duration_s
        else:
            ok, sent, elapsed = python_load(port, targets, seconds, connections)
    failures = log_path.read_text(errors="replace").count(PUBLISH_FAILED)
    label = "wrk" if generator == "wrk" else "Python threads + requests.Session" + (
        "" if wrk.available() else " (wrk not on PATH)")
    return TrackReport(f"{label}, {connections} connections", ok, sent, elapsed, failures)


# --- the run ------------------------------------------------------------------------------


@contextmanager
def emulator_environment(log_dir: Path) -> Iterator[tuple[dict[str, str], str]]:
    """Reuse the emulators the environment names (Firestore wiped), else start a pair."""
    firestore_host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    pubsub_host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if firestore_host and pubsub_host:
        project = os.environ.get(config.PROJECT) or emulators.DEFAULT_PROJECT
        emulators.wipe_firestore(firestore_host, project)
        env = {"FIRESTORE_EMULATOR_HOST": firestore_host, "PUBSUB_EMULATOR_HOST": pubsub_host,
               config.PROJECT: project}
        os.environ.update(env)
        yield env, "reused"
        return
    with emulators.running(log_dir=log_dir) as env:
        os.environ.update(env)  # the Google clients find the emulators through these
        yield env, "started"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=100_000, help="unique clicks to publish")
    parser.add_argument("--campaigns", type=int, default=50)
    parser.add_argument("--hot-share", type=float, default=0.40, help="share of clicks on the hot campaign")
    parser.add_argument("--bot-share", type=float, default=0.05)
    parser.add_argument("--duplicate-share", type=float, default=0.05, help="extra copies of clicks, per click")
    parser.add_argument("--poison-share", type=float, default=0.01, help="poison events, per click")
    parser.add_argument("--hours", type=float, default=6.0, help="clicks are spread over this many past hours")
    parser.add_argument("--second-aggregator", choices=("drainer", "push"), default="drainer",
                        help="what races the scheduled drainer: another drainer, or one-by-one push folds")
    parser.add_argument("--track-seconds", type=float, default=10.0, help="how long to load the track function")
    parser.add_argument("--connections", type=int, default=TRACK_SERVER_THREADS, help="concurrent track requests")
    parser.add_argument("--seed", type=int, default=None, help="seed for the click mix (click ids stay random)")
    parser.add_argument("--load-generator", choices=("wrk", "python"), default=None,
                        help="default: wrk when it is on PATH, else Python threads with requests")
    args = parser.parse_args(argv)
    if args.load_generator is None:
        args.load_generator = "wrk" if wrk.available() else "python"
    elif args.load_generator == "wrk" and not wrk.available():
        parser.error("wrk is not on PATH")
    if args.clicks < 1 or args.campaigns < 1:
        parser.error("--clicks and --campaigns must be positive")
    return args


def say(message: str) -> None:
    print(message, flush=True)


def soak(args: argparse.Namespace) -> bool:
    """Runs every phase, printing as it goes; True when every count is exact."""
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="o7tracker-soak-"))
    with emulator_environment(workdir) as (env, how):
        project = env[config.PROJECT]
        say(f"emulators ({how}): firestore {env['FIRESTORE_EMULATOR_HOST']}, pubsub {env['PUBSUB_EMULATOR_HOST']}")
        suffix = uuid.uuid4().hex[:12]
        topic, subscription = f"soak-clicks-{suffix}", f"soak-clicks-agg-{suffix}"
        emulators.create_topic_and_subscription(project, topic, subscription)
        store = CampaignStore(firestore.Client(project=project), SHARD_COUNT)
        campaigns, workload = prepare(store, args)
        publish(project, topic, workload)
        drain = drain_concurrently(project, subscription, args.second_aggregator)
        total, fold_rps = report_drain(drain)
        exact = check(store, campaigns, workload, total)
        track = measure_track(env, campaigns, args.load_generator, args.track_seconds, args.connections, workdir)
        report_track(track, fold_rps)

    busiest, max_writes = drain.writes.busiest_document()
    say(f"writes: busiest counter document {busiest} took {max_writes} writes within one second; "
        f"hot campaign's {SHARD_COUNT} counter shards took {drain.writes.shard_spread(campaigns[0].id)} writes")
    say(f"took {time.monotonic() - started:.0f} s; emulator and track server logs in {workdir}")
    say(f"soak: sent={workload.sent} counted={total.result.counted} duplicates={total.result.duplicates} "
        f"poison={total.result.poison} exact={'yes' if exact else 'no'} max_writes_per_doc_per_s={max_writes} "
        f"fold_rps={fold_rps:.1f} track_rps={track.rps:.1f}")
    return exact


def prepare(store: CampaignStore, args: argparse.Namespace) -> tuple[list[CampaignSpec], Workload]:
    campaigns = create_campaigns(store, args.campaigns)
    mix = Mix(args.clicks, args.hot_share, args.bot_share, args.duplicate_share, args.poison_share, args.hours)
    workload = make_workload(campaigns, mix, random.Random(args.seed))
    say(f"campaigns: {len(campaigns)} over {len(PLATFORM_SETS)} platform sets; hot campaign "
        f"{campaigns[0].id} gets {args.hot_share:.0%} of clicks; {len(workload.truth.hours())} hourly buckets")
    return campaigns, workload


def publish(project: str, topic: str, workload: Workload) -> None:
    seconds = publish_all(project, topic, workload.payloads)
    say(f"published: {workload.sent} clicks ({workload.bots} bots) + {workload.duplicates} duplicates "
        f"+ {workload.poison} poison = {len(workload.payloads)} messages in {seconds:.1f} s "
        f"({len(workload.payloads) / seconds:.0f}/s)")


def report_drain(drain: DrainReport) -> tuple[Tally, float]:
    total = drain.total()
    for tally in drain.tallies:
        say(f"  {tally.describe()}")
    fold_rps = total.pulled / drain.seconds if drain.seconds else 0.0
    say(f"drained: {total.pulled} messages in {drain.seconds:.1f} s ({fold_rps:.0f}/s), "
        f"{len(drain.writes.records)} counter writes")
    return total, fold_rps


def refresh_shown(store: CampaignStore) -> RefreshResult:
    """What the scheduled run does after draining: the totals and days readers see, from the shards."""
    refresher = TotalsRefresher(store.db, SHARD_COUNT, max_seconds=300)
    result = refresher.refresh()
    if not result.complete:
        raise RuntimeError("the totals refresh did not finish")
    return result


def check(store: CampaignStore, campaigns: Sequence[CampaignSpec], workload: Workload, total: Tally) -> bool:
    """Every campaign's counters and hourly buckets against the ground truth; True if all match."""
    refreshed = refresh_shown(store)
    state, settled = settled_state(store, campaigns)
    found = mismatches(state, campaigns, workload.truth)
    counted = total.result.counted
    say(f"refresh: {refreshed.campaigns} campaigns' totals and days from {refreshed.markers} dirty markers")
    say(f"check: {len(campaigns)} campaigns, {sum(len(h) for *_, h in state.values())} hourly buckets, "
        f"{len(found)} mismatches; settled={'yes' if settled else 'no'}; counted {counted} of {workload.sent} clicks")
    if (total.result.duplicates, total.result.poison) != (workload.duplicates, workload.poison):
        say(f"  note: {workload.duplicates} duplicates and {workload.poison} poison events were published; "
            f"Pub/Sub redeliveries add to both (the dedup records keep them out of the counts)")
    for line in found[:10]:
        say(f"  MISMATCH {line}")
    return settled and not found and counted == workload.sent


def report_track(track: TrackReport, fold_rps: float) -> None:
    say(f"track: one instance ({TRACK_SERVER_THREADS} threads), {track.generator}: {track.ok} redirects to "
        f"campaign URLs of {track.requests} requests in {track.seconds:.1f} s; "
        f"{track.publish_failures} failed publishes")
    ratio = fold_rps / track.rps if track.rps else float("inf")
    say(f"fold_rps/track_rps = {ratio:.2f} (two aggregators against one track instance): aggregation "
        f"{'keeps up' if ratio >= 1 else 'falls behind'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Poison events are logged as warnings by the thousand here; only errors are news.
    logging.getLogger("o7tracker").setLevel(logging.ERROR)
    try:
        return 0 if soak(args) else 1
    except emulators.EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
