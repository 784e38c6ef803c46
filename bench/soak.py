"""Accuracy and cost soak: many clicks, as deployed, every count checked and every Firestore operation priced.

    python -m bench.soak --clicks 100000 [--rate 2000 --every 60] [--partitions 3]

Starts its own Firestore and Pub/Sub emulators (or reuses the pair named by
``FIRESTORE_EMULATOR_HOST`` and ``PUBSUB_EMULATOR_HOST``, wiping Firestore
first), creates campaigns, and publishes clicks from several producers (each
numbering its events, as track workers do), with bots, duplicates, replays run
twice, events of the schema before producers, and poison; every click but a
bot's carries the visitor key of one of a pool of visitors (about three clicks
each). The scheduled run,
built from the settings as deployed, is called every ``--every`` seconds while
the clicks are published (all at once, or at a steady ``--rate``), until the
backlog is counted. Then a second wave is counted by two aggregators at once.
Every campaign's totals and hourly counts, as the admin shows them, are
compared with a ground truth kept in memory, computed here independently of
``shared.counting``, and so are its distinct visitors (an estimate: the
largest error is reported). Every Firestore operation the aggregators make is counted
at their clients' transport and priced (bench/prices.py), with the TTL deletes
the design implies. Last, the hot path benchmark's hit case is run here too (one
track instance as deployed, every campaign cached, wrk at 64 connections), and one
scheduled run folds what that instance published, as it packed it: ``fold_rps``, set
side by side against the click rate that benchmark reports (``track_rps``).

The waves are published as the track function publishes: in Publish calls of
``--events-per-call`` events on average (a busy instance's figure is printed with
its fold), a call's events that go to one partition sharing a message.

It prints figures, the last line a one-line summary, and exits 0 only when
every count is exact. This is a soak, not a test: it is not run by ./test.sh.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import random
import secrets
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Cloud Functions runs each function from its own directory, so its modules import one
# another by bare name (``from aggregation import ...``): put those directories on the path.
for _function in ("aggregate", "track"):
    sys.path.insert(0, str(ROOT / "functions" / _function))
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from aggregation import RunReport, build_applier, build_drainer, build_scheduled_run, receive_pushed  # noqa: E402
from google.cloud import firestore, pubsub_v1  # noqa: E402

from bench import hotpath, wrk  # noqa: E402
from bench.prices import usd_per_million_clicks  # noqa: E402
from bench.reads import ReadCounter  # noqa: E402
from local import emulators  # noqa: E402
from shared import config  # noqa: E402
from shared.collector import collect_seldom  # noqa: E402
from shared.counting import Applier, Journal  # noqa: E402
from shared.errors import InvalidEvent  # noqa: E402
from shared.events import ClickEvent, Producer  # noqa: E402
from shared.ids import keyed_ids  # noqa: E402
from shared.partitions import PARTITION_ATTRIBUTE, partition_of, subscription_of  # noqa: E402
from shared.platforms import PLATFORMS  # noqa: E402
from shared.publishing import packed  # noqa: E402
from shared.sketches import VisitorUnion  # noqa: E402
from shared.store import CLICKS, PRODUCERS, CampaignStore  # noqa: E402
from shared.utc import as_utc, hour_of  # noqa: E402

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
# The soak's clicks are all on active campaigns: these stay 0, and must be answered as 0.
INACTIVE = ("inactive_click_count", *(f"{platform.lower()}_inactive_click_count" for platform in PLATFORMS))
EXPECTED_FIELDS = (TOTAL, *PLATFORM_COUNTER.values(), BOTS, *INACTIVE)

# Every non-empty platform set, the full set first (it goes to the hot campaign).
PLATFORM_SETS: list[tuple[str, ...]] = [
    subset for size in range(len(PLATFORMS), 0, -1) for subset in combinations(PLATFORMS, size)
]

Counts = dict[str, int]
# Clicks per visitor, on average: the pool of visitors is the clicks divided by this.
CLICKS_PER_VISITOR = 3


# --- ground truth -------------------------------------------------------------------------


class GroundTruth:
    """The exact counters each campaign must end with, from the clicks as generated."""

    def __init__(self) -> None:
        self._totals: defaultdict[int, Counter[str]] = defaultdict(Counter)
        self._hourly: defaultdict[int, defaultdict[datetime, Counter[str]]] = defaultdict(
            lambda: defaultdict(Counter)
        )
        self._visitors: defaultdict[int, set[str]] = defaultdict(set)

    def add(self, campaign_id: int, platform: str | None, bot: bool, ts: datetime, visitor: str) -> None:
        if platform is None and not bot:
            raise ValueError("only a bot click may come without a platform")
        if visitor and not bot:
            self._visitors[campaign_id].add(visitor)
        hour = hour_of(ts)
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

    def visitors(self, campaign_id: int) -> int:
        """The campaign's distinct visitors (a visitor's key changes with the UTC day, as the salt does)."""
        return len(self._visitors.get(campaign_id, ()))

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
    producers: int
    hot_share: float
    bot_share: float
    duplicate_share: float
    replay_share: float
    legacy_share: float
    poison_share: float
    hours: float


@dataclass
class Workload:
    payloads: list[bytes]
    """Every message to publish, shuffled: clicks, duplicates, replays and poison interleaved."""
    truth: GroundTruth
    sent: int
    bots: int
    duplicates: int
    replays: int
    legacy: int
    poison: int


def make_workload(campaigns: Sequence[CampaignSpec], mix: Mix, rng: random.Random, truth: GroundTruth) -> Workload:
    now = datetime.now(timezone.utc)
    producers = [Producer() for _ in range(mix.producers)]
    # Traffic arrives in click order, so a batch spans an hour or two of buckets, not all of them;
    # each producer numbers its events in the order it makes them.
    draws = sorted((random_draw(campaigns, mix, rng, now) for _ in range(mix.clicks)), key=lambda d: d[3])
    payloads = []
    legacy = 0
    pool = max(1, mix.clicks // CLICKS_PER_VISITOR)
    for campaign_id, platform, bot, ts in draws:
        # Published before the upgrade, delivered after it: before visitor keys too.
        before_producers = rng.random() < mix.legacy_share
        # The track function keys no bot.
        visitor = "" if bot or before_producers else visitor_key(rng.randrange(pool), ts)
        truth.add(campaign_id, platform, bot, ts, visitor)
        event = ClickEvent.new(campaign_id, platform, producer=rng.choice(producers), user_agent="bench.soak",
                               bot=bot, now=ts, visitor=visitor)
        if before_producers:
            payloads.append(schema_1_payload(event))
            legacy += 1
        else:
            payloads.append(event.encode())
    # A duplicate is the very same bytes published again, as a publish retry or a redelivery makes it;
    # a replay run twice republishes the same logged events twice.
    duplicates = [payloads[rng.randrange(len(payloads))] for _ in range(round(mix.clicks * mix.duplicate_share))]
    replayed = [payloads[rng.randrange(len(payloads))] for _ in range(round(mix.clicks * mix.replay_share))]
    known = {c.id for c in campaigns}
    poison = [poison_payload(i, rng, known, now, producers[0]) for i in range(round(mix.clicks * mix.poison_share))]
    messages = list(payloads)
    for extra in duplicates + replayed * 2 + poison:  # anywhere in the stream
        messages.insert(rng.randrange(len(messages) + 1), extra)
    return Workload(messages, truth, len(draws), sum(d[2] for d in draws), len(duplicates), 2 * len(replayed),
                    legacy, len(poison))


def random_draw(campaigns: Sequence[CampaignSpec], mix: Mix, rng: random.Random,
                now: datetime) -> tuple[int, str | None, bool, datetime]:
    hot, others = campaigns[0], campaigns[1:]
    campaign = hot if not others or rng.random() < mix.hot_share else rng.choice(others)
    bot = rng.random() < mix.bot_share
    # Half the bots name no targeted platform (a crawler's preview), which only a bot click may do.
    platform = None if bot and rng.random() < 0.5 else rng.choice(campaign.platforms)
    # Spread over the last hours so that several hourly buckets fill.
    return campaign.id, platform, bot, now - timedelta(seconds=rng.uniform(0, mix.hours * 3600))


def visitor_key(visitor: int, ts: datetime) -> str:
    """A synthetic visitor's key on the UTC day of ``ts``: one per visitor and day, as the day's salt makes it."""
    return hashlib.sha256(f"{visitor}/{as_utc(ts):%Y%m%d}".encode()).hexdigest()[:16]


def schema_1_payload(event: ClickEvent) -> bytes:
    fields = event.fields()
    del fields["producer"], fields["seq"]
    return json.dumps({**fields, "v": 1}).encode()


def poison_payload(i: int, rng: random.Random, known: set[int], now: datetime, producer: Producer) -> bytes:
    """In turn: malformed JSON, an event missing a field, an event for a campaign that does not exist,
    and one older than the redelivery horizon."""
    kind = i % 4
    if kind == 0:
        return b'{"click_id": "' + uuid.uuid4().hex.encode()  # cut short
    if kind == 1:
        fields = ClickEvent.new(1, rng.choice(PLATFORMS), producer=producer, now=now).fields()
        del fields[rng.choice(["click_id", "campaign_id", "platform", "ts", "seq"])]
        return json.dumps(fields).encode()
    if kind == 2:
        unknown = rng.randrange(1, 2**53)
        while unknown in known:
            unknown = rng.randrange(1, 2**53)
        return ClickEvent.new(unknown, rng.choice(PLATFORMS), producer=producer, now=now).encode()
    stale = now - timedelta(days=config.Settings().redelivery_horizon_days + 1)
    return ClickEvent.new(min(known), rng.choice(PLATFORMS), producer=producer, now=stale).encode()


# --- Pub/Sub ------------------------------------------------------------------------------


def publish_all(project: str, topic: str, payloads: Sequence[bytes], rate: float, partitions: int,
                per_call: float, rng: random.Random) -> float:
    """Publish at ``rate`` events a second (0: all at once) as the track function publishes them:
    consecutive events go in Publish calls of ``per_call`` on average (at a steady rate, none reaching
    past a tick: no event waits for the next), each call's events packed as the track function packs
    them (:func:`shared.publishing.packed`), each message tagged with its partition; returns the seconds
    taken."""
    settings = pubsub_v1.types.BatchSettings(max_messages=1000, max_bytes=4_000_000, max_latency=0.05)
    publisher = pubsub_v1.PublisherClient(batch_settings=settings)
    path = publisher.topic_path(project, topic)
    started = time.monotonic()
    futures = []
    call: list[bytes] = []
    size = call_size(per_call, rng)

    def send() -> None:
        nonlocal call, size
        messages, _ = packed([partition_for(payload, partitions) for payload in call], call)
        futures.extend(publisher.publish(path, data, **{PARTITION_ATTRIBUTE: str(partition)})
                       for partition, data in messages)
        call, size = [], call_size(per_call, rng)

    for i, payload in enumerate(payloads):
        if rate and i % 100 == 0:
            if call:
                send()
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
        call.append(payload)
        if len(call) >= size:
            send()
    if call:
        send()
    for future in futures:
        future.result(timeout=300)
    elapsed = time.monotonic() - started
    publisher.stop()
    return elapsed


def call_size(per_call: float, rng: random.Random) -> int:
    """Events in the next Publish call: from one to twice ``per_call``, so that lone clicks (and
    replays, a message each) are among them."""
    return rng.randint(1, max(1, round(2 * per_call) - 1))


# --- the aggregators ----------------------------------------------------------------------


@dataclass
class Runs:
    """Scheduled runs of one aggregator and what they did."""

    reports: list[RunReport] = field(default_factory=list)
    counted: int = 0
    duplicates: int = 0
    poison: int = 0
    pulled: int = 0
    messages: int = 0
    busy_seconds: float = 0.0
    """Seconds spent in runs that pulled something."""
    busy_cpu_seconds: float = 0.0
    """This process's CPU in those runs: all of it the runs' while nothing else runs beside them."""

    def add(self, report: RunReport, cpu_seconds: float = 0.0) -> None:
        self.reports.append(report)
        summary = report.summary()
        self.counted += summary["counted"]
        self.duplicates += summary["duplicates"]
        self.poison += summary["poison"]
        self.pulled += summary["pulled"]
        self.messages += summary["messages"]
        if summary["pulled"]:
            self.busy_seconds += report.seconds
            self.busy_cpu_seconds += cpu_seconds


def partition_for(payload: bytes, partitions: int) -> int:
    """The partition the track function publishes ``payload`` to (partition 0 for poison)."""
    if partitions == 1:
        return 0  # without decoding, which a steady wave's drain would compete with
    try:
        producer = ClickEvent.decode(payload).producer
    except InvalidEvent:
        return 0
    return partition_of(producer, partitions)


def settings_for(project: str, subscription: str, partitions: int = 1) -> config.Settings:
    """The aggregate function's settings as deployed, on this soak's subscription."""
    return config.Settings.from_env({**os.environ, config.PROJECT: project, config.CLICKS_SUBSCRIPTION: subscription,
                                     config.AGGREGATE_PARTITIONS: str(partitions)})


def scheduled_runs(settings: config.Settings, counters: list[ReadCounter], published: threading.Event,
                   every: float, partition: int) -> Runs:
    """Call ``partition``'s scheduled run every ``every`` seconds, as Cloud Scheduler does, until the
    clicks are all published and a run finds nothing left to drain or apply."""
    applier = build_applier(settings)
    counters.append(ReadCounter(applier.db))
    run = build_scheduled_run(settings, applier, partition)
    runs = Runs()
    while True:
        began = time.monotonic()
        done = published.is_set()
        cpu = time.process_time()
        report = run.run()
        runs.add(report, time.process_time() - cpu)
        if done and report.drained and report.drained.caught_up and not report.drained.pulled \
                and report.applied.complete:
            return runs
        time.sleep(max(0.0, began + every - time.monotonic()))


def bare_aggregator(settings: config.Settings, counters: list[ReadCounter]) -> Runs:
    """A second consumer that ignores the scheduled run's lease: drains and applies until nothing is left."""
    db = firestore.Client(project=settings.project)
    counters.append(ReadCounter(db))
    drainer, applier, runs = build_drainer(settings, Journal(db)), Applier(db, build_applier(settings).horizon), Runs()
    while True:
        drained = drainer.drain(datetime.max.replace(tzinfo=timezone.utc), time.monotonic() + 30)
        applied = applier.apply(time.monotonic() + 30)
        runs.counted += applied.counted
        runs.duplicates += applied.duplicates
        runs.poison += applied.poison + drained.received.poison
        runs.pulled += drained.pulled
        if not drained.pulled and applied.complete:
            return runs


def fold_backlog(project: str, subscription: str) -> Runs:
    """The scheduled run as deployed, called back to back on ``subscription`` until its backlog is counted."""
    published = threading.Event()
    published.set()
    return scheduled_runs(settings_for(project, subscription), [], published, 0.0, 0)


def implied_ttl_deletes(db: firestore.Client) -> int:
    """Documents the design leaves for Firestore's TTL to delete: producers' ledgers and schema 1 records."""
    return sum(1 for _ in db.collection(PRODUCERS).select([]).stream()) + sum(
        1 for _ in db.collection(CLICKS).select([]).stream())


# --- comparing with the ground truth ------------------------------------------------------

State = dict[int, tuple[Counts, dict[datetime, Counts]]]
"""Per campaign: the totals readers see, the hourly counts readers see."""


def read_state(store: CampaignStore, campaigns: Sequence[CampaignSpec]) -> State:
    now = datetime.now(timezone.utc)
    start, end = now - timedelta(days=30), now + timedelta(days=1)
    return {
        c.id: (dict(store.get(c.id).counters),
               {hour: dict(counts) for hour, counts in store.hourly(c.id, start, end).counts.items()})
        for c in campaigns
    }


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
        shown, hourly = state[campaign.id]
        expected = truth.totals(campaign.id)
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
    cpu_seconds: float
    """The track server's CPU under the load."""
    subscription: str
    """The subscription on the instance's topic: what it published waits there."""

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_click(self) -> float:
        return 1e6 * self.cpu_seconds / self.ok if self.ok else 0.0


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
    env: dict[str, str], store: CampaignStore, campaigns: Sequence[CampaignSpec], generator: str, seconds: float,
    connections: int, workdir: Path,
) -> TrackReport:
    """``./bench.sh hotpath``'s hit case, in this run: one track instance as deploy.sh deploys it, every
    campaign cached, under wrk as that benchmark drives it, so that the fold rate is set against the
    very figure the hot path benchmark reports."""
    topic = f"soak-track-{uuid.uuid4().hex[:12]}"
    # With a subscription, as the hot path benchmark's and every deployed click topic has: Pub/Sub then keeps
    # each click, which is part of what a publish costs, and the soak folds them afterwards.
    emulators.create_topic_and_subscription(env[config.PROJECT], topic, topic + "-sub")
    targets = track_targets(campaigns)
    settings = {config.CACHE_TTL_SECONDS: hotpath.HIT_TTL_SECONDS, config.FALLBACK_URL: FALLBACK_URL}
    spec = hotpath.deployed_track("track", env[config.PROJECT], topic, workdir, settings)
    # The hot path benchmark's first click, whose redirect tells it the server is up.
    probe = store.create({"redirect_url": hotpath.LOCATION, "platforms": ["Android"]})
    server = hotpath.start_server(spec, env, f"/track/{probe.id}?platform=Android", workdir)
    try:
        warm_up(server.port, targets)
        cpu = server.cpu_seconds()
        if generator == "wrk":
            # Counts only 307s to a targeted campaign's URL.
            load = wrk.run_wrk(server.port, [path for path, _ in targets], {location for _, location in targets},
                               connections, seconds, workdir, hotpath.WRK_TIMEOUT_S, threads=min(connections, 2),
                               headers={"Referer": hotpath.RUN_REFERRER.format(0)})
            ok, sent, elapsed = load.ok, load.requests, load.duration_s
        else:
            ok, sent, elapsed = python_load(server.port, targets, seconds, connections)
        cpu = server.cpu_seconds() - cpu
    finally:
        server.stop()
    failures = server.log_path.read_text(errors="replace").count(PUBLISH_FAILED)
    label = "wrk" if generator == "wrk" else "Python threads + requests.Session" + (
        "" if wrk.available() else " (wrk not on PATH)")
    return TrackReport(f"{label}, {connections} connections", ok, sent, elapsed, failures, cpu, topic + "-sub")


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



# --- the run ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=100_000, help="unique clicks to publish")
    parser.add_argument("--race-clicks", type=int, default=10_000,
                        help="unique clicks of the second wave, counted by two aggregators at once")
    parser.add_argument("--event-clicks", type=int, default=1000,
                        help="clicks pushed one at a time, as the event-triggered function counts them")
    parser.add_argument("--campaigns", type=int, default=50)
    parser.add_argument("--producers", type=int, default=8, help="track workers the clicks come from")
    parser.add_argument("--partitions", type=int, default=1,
                        help="AGGREGATE_PARTITIONS: each partition's scheduled runs go on at once (the emulator "
                             "ignores subscription filters, so every partition pulls every message: exactness, "
                             "not speed)")
    parser.add_argument("--events-per-call", type=float, default=20.0,
                        help="events of a Publish call of the waves, on average: the track function packs a call's "
                             "events of one partition into one message, about 20 under the hot path benchmark's load")
    parser.add_argument("--hot-share", type=float, default=0.40, help="share of clicks on the hot campaign")
    parser.add_argument("--bot-share", type=float, default=0.05)
    parser.add_argument("--duplicate-share", type=float, default=0.05, help="extra copies of clicks, per click")
    parser.add_argument("--replay-share", type=float, default=0.01,
                        help="clicks republished by a replay run twice, per click")
    parser.add_argument("--legacy-share", type=float, default=0.01,
                        help="clicks published in the schema before producers, per click")
    parser.add_argument("--poison-share", type=float, default=0.01, help="poison events, per click")
    parser.add_argument("--hours", type=float, default=6.0, help="clicks are spread over this many past hours")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="events published per second (0: all at once, then counted)")
    parser.add_argument("--every", type=float, default=None,
                        help="seconds between scheduled runs (default: back to back when --rate is 0, else 60, "
                             "deploy.sh's schedule)")
    parser.add_argument("--track-seconds", type=float, default=10.0, help="how long to load the track function")
    parser.add_argument("--connections", type=int, default=hotpath.SUMMARY_CONNECTIONS,
                        help="concurrent track requests (default: the hot path benchmark's)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the click mix (click ids stay random)")
    parser.add_argument("--load-generator", choices=("wrk", "python"), default=None,
                        help="default: wrk when it is on PATH, else Python threads with requests")
    args = parser.parse_args(argv)
    if args.load_generator is None:
        args.load_generator = "wrk" if wrk.available() else "python"
    elif args.load_generator == "wrk" and not wrk.available():
        parser.error("wrk is not on PATH")
    if args.clicks < 1 or args.campaigns < 1 or args.producers < 1:
        parser.error("--clicks, --campaigns and --producers must be positive")
    if not 1 <= args.partitions <= config.MAX_PARTITIONS:
        parser.error(f"--partitions must be from 1 to {config.MAX_PARTITIONS}")
    if args.every is None:
        args.every = 60.0 if args.rate else 0.0
    return args


def say(message: str) -> None:
    print(message, flush=True)


@dataclass
class Wave:
    workload: Workload
    runs: list[Runs]
    seconds: float


def soak(args: argparse.Namespace) -> bool:
    """Runs every phase, printing as it goes; True when every count is exact."""
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="o7tracker-soak-"))
    with emulator_environment(workdir) as (env, how):
        project = env[config.PROJECT]
        env[config.CAMPAIGN_ID_KEY] = os.environ.get(config.CAMPAIGN_ID_KEY) or secrets.token_urlsafe(32)
        say(f"emulators ({how}): firestore {env['FIRESTORE_EMULATOR_HOST']}, pubsub {env['PUBSUB_EMULATOR_HOST']}")
        db = firestore.Client(project=project)
        store = CampaignStore(db, config.Settings().counter_shards, keyed_ids(config.Settings.from_env(env)))
        campaigns = create_campaigns(store, args.campaigns)
        rng, truth = random.Random(args.seed), GroundTruth()
        counters: list[ReadCounter] = []
        first = wave(project, campaigns, args, args.clicks, rng, truth, counters, race=False)
        second = wave(project, campaigns, args, args.race_clicks, rng, truth, counters, race=True)
        pushed = event_mode(project, campaigns, args.event_clicks, rng, truth)
        exact = check(store, campaigns, truth, [first, second])
        visitors_error = check_visitors(store, campaigns, truth)
        ttl = implied_ttl_deletes(db)
        track = measure_track(env, store, campaigns, args.load_generator, args.track_seconds, args.connections, workdir)
        folded = fold_backlog(project, track.subscription)

    clicks = first.workload.sent + second.workload.sent
    counted = sum(r.counted for w in (first, second) for r in w.runs)
    exact = exact and pushed and folded.counted >= track.ok and not folded.poison
    reads, writes = sum(c.reads for c in counters), sum(c.writes for c in counters)
    deletes = sum(c.deletes for c in counters) + ttl
    usd = usd_per_million_clicks(reads, writes, deletes, clicks)
    fold_rps = folded.pulled / folded.busy_seconds if folded.busy_seconds else 0.0
    fold_cpu_us = 1e6 * folded.busy_cpu_seconds / folded.pulled if folded.pulled else 0.0
    report_track(track, folded, fold_rps, fold_cpu_us)
    say(f"firestore: {reads} reads, {writes} writes, {deletes} deletes ({ttl} of them by TTL) for {clicks} clicks; "
        f"USD {usd:.4f} per million clicks at list prices (bench/prices.py)")
    say(f"took {time.monotonic() - started:.0f} s; emulator and track server logs in {workdir}")
    say(f"soak: sent={clicks} counted={counted} exact={'yes' if exact else 'no'} fold_rps={fold_rps:.0f} "
        f"track_rps={track.rps:.0f} reads_per_click={reads / clicks:.4f} writes_per_click={writes / clicks:.4f} "
        f"deletes_per_click={deletes / clicks:.4f} usd_per_million={usd:.4f} "
        f"visitors_max_error={100 * visitors_error:.2f}% fold_cpu_us={fold_cpu_us:.0f} "
        f"track_cpu_us={track.cpu_us_per_click:.0f}")
    return exact and counted == clicks


def wave(project: str, campaigns: Sequence[CampaignSpec], args: argparse.Namespace, clicks: int,
         rng: random.Random, truth: GroundTruth, counters: list[ReadCounter], race: bool) -> Wave:
    """Publish one workload and count it: by the scheduled run alone, or raced by a second aggregator."""
    suffix = uuid.uuid4().hex[:12]
    topic, subscription = f"soak-clicks-{suffix}", f"soak-clicks-agg-{suffix}"
    for partition in range(args.partitions):
        emulators.create_topic_and_subscription(project, topic, subscription_of(subscription, partition))
    mix = Mix(clicks, args.producers, args.hot_share, args.bot_share, args.duplicate_share, args.replay_share,
              args.legacy_share, args.poison_share, args.hours)
    workload = make_workload(campaigns, mix, rng, truth)
    settings = settings_for(project, subscription, args.partitions)
    published = threading.Event()
    name = "race: the scheduled run and a second aggregator at once" if race else (
        f"steady at {args.rate:.0f} events/s, a run every {args.every:.0f} s" if args.rate else
        "all published, then counted by back-to-back scheduled runs") + (
        f"; {args.partitions} partitions, a scheduled run each" if args.partitions > 1 else "")
    say(f"wave: {workload.sent} clicks ({workload.bots} bots, {workload.legacy} in schema 1) + {workload.duplicates} "
        f"duplicates + {workload.replays} replayed + {workload.poison} poison = {len(workload.payloads)} events; "
        f"{name}")
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.partitions + 2) as pool:
        if args.rate and not race:
            publishing = pool.submit(publish_all, project, topic, workload.payloads, args.rate, args.partitions,
                                     args.events_per_call, rng)
        else:
            publish_all(project, topic, workload.payloads, 0, args.partitions, args.events_per_call, rng)
            started = time.monotonic()
            publishing = None
        published_at = None
        running = {f"scheduled run{f' of partition {n}' if args.partitions > 1 else ''}": pool.submit(
            scheduled_runs, settings, counters, published, 0 if race else args.every, n)
            for n in range(args.partitions)}
        if race:
            running["second aggregator"] = pool.submit(bare_aggregator, settings, counters)
        if publishing is not None:
            publishing.result()
            published_at = time.monotonic() - started
        published.set()
        results = {name: future.result() for name, future in running.items()}
    seconds = time.monotonic() - started
    report_wave(results, seconds, published_at)
    return Wave(workload, list(results.values()), seconds)


def event_mode(project: str, campaigns: Sequence[CampaignSpec], clicks: int, rng: random.Random,
               truth: GroundTruth) -> bool:
    """The event-triggered function's path, one pushed click at a time, each delivered twice:
    its Firestore operations per click. True if it counted each click once."""
    db = firestore.Client(project=project)
    counter = ReadCounter(db)
    applier = Applier(db, build_applier(settings_for(project, "unused")).horizon)
    journal, producer, counted = Journal(db), Producer(), 0
    for i in range(clicks):
        campaign = rng.choice(campaigns)
        now = datetime.now(timezone.utc)
        event = ClickEvent.new(campaign.id, rng.choice(campaign.platforms), producer=producer, now=now,
                               visitor=visitor_key(rng.randrange(max(1, clicks // CLICKS_PER_VISITOR)), now))
        truth.add(event.campaign_id, event.platform, event.bot, event.ts, event.visitor)
        envelope = {"message": {"data": base64.b64encode(event.encode()).decode(), "messageId": str(i)}}
        for _ in range(2):  # a redelivery, which the function must absorb
            counted += receive_pushed(journal, applier, envelope).journaled
    left = applier.apply(time.monotonic() + 60)  # what a conflict left for the scheduled run
    deletes = counter.deletes + 1  # the producer's ledger, by TTL
    usd = usd_per_million_clicks(counter.reads, counter.writes, deletes, clicks)
    say(f"event mode: {clicks} clicks pushed one at a time, each delivered twice: "
        f"{counter.reads / clicks:.2f} reads, {counter.writes / clicks:.2f} writes, {deletes / clicks:.2f} deletes "
        f"per click; USD {usd:.2f} per million clicks ({left.counted} left to the scheduled run)")
    return counted == 2 * clicks


def report_wave(results: dict[str, Runs], seconds: float, published_at: float | None) -> None:
    for name, runs in results.items():
        longest = max((r.seconds for r in runs.reports), default=0.0)
        lags = [(r.started - r.as_of).total_seconds() for r in runs.reports[1:] if r.as_of]
        say(f"  {name}: {len(runs.reports) or 'loop'} runs, pulled={runs.pulled} counted={runs.counted} "
            f"duplicates={runs.duplicates} poison={runs.poison}; busy {runs.busy_seconds:.1f} s "
            f"({runs.pulled / runs.busy_seconds if runs.busy_seconds else 0:.0f} events/s)"
            + (f"; longest run {longest:.1f} s; as_of at most {max(lags, default=0):.1f} s behind a run's start"
               if runs.reports else ""))
    say(f"  counted in {seconds:.1f} s" + (f" (published over {published_at:.1f} s)" if published_at else ""))


def check(store: CampaignStore, campaigns: Sequence[CampaignSpec], truth: GroundTruth, waves: list[Wave]) -> bool:
    """Every campaign's totals and hourly counts against the ground truth; True if all match."""
    state, settled = settled_state(store, campaigns)
    found = mismatches(state, campaigns, truth)
    say(f"check: {len(campaigns)} campaigns, {sum(len(h) for _, h in state.values())} hourly buckets, "
        f"{len(found)} mismatches; settled={'yes' if settled else 'no'}")
    poison = sum(w.workload.poison for w in waves)
    counted_poison = sum(r.poison for w in waves for r in w.runs)
    if counted_poison < poison:
        say(f"  MISMATCH {poison} poison events published, {counted_poison} counted as poison")
    for line in found[:10]:
        say(f"  MISMATCH {line}")
    return settled and not found and counted_poison >= poison


def check_visitors(store: CampaignStore, campaigns: Sequence[CampaignSpec], truth: GroundTruth) -> float:
    """Every campaign's distinct visitors over the soak's range, as the stats' sketches estimate them,
    against the ground truth; returns the largest relative error."""
    now = datetime.now(timezone.utc)
    errors = []
    for campaign in campaigns:
        union = VisitorUnion()
        for sketches in store.hourly(campaign.id, now - timedelta(days=30), now + timedelta(days=1)).visitors.values():
            for sketch in sketches.values():
                union.add(sketch)
        expected = truth.visitors(campaign.id)
        errors.append(abs(union.estimate() - expected) / expected if expected else float(union.estimate()))
    say(f"visitors: {len(campaigns)} campaigns, {sum(truth.visitors(c.id) for c in campaigns)} distinct visitors; "
        f"largest error of a campaign's estimate {100 * max(errors):.2f}% (HyperLogLog, lg_k 14)")
    return max(errors)


def report_track(track: TrackReport, folded: Runs, fold_rps: float, fold_cpu_us: float) -> None:
    say(f"track: one instance as deployed, bench.hotpath's hit case, {track.generator}: {track.ok} redirects to "
        f"campaign URLs of {track.requests} requests in {track.seconds:.1f} s; "
        f"{track.publish_failures} failed publishes")
    say(f"fold: the scheduled run as deployed counted what the instance published: {folded.pulled} events in "
        f"{folded.messages} messages ({folded.pulled / folded.messages if folded.messages else 0:.1f} a message), "
        f"counted={folded.counted} (every redirect: {'yes' if folded.counted >= track.ok else 'NO'}) "
        f"poison={folded.poison}, in {len(folded.reports)} runs busy {folded.busy_seconds:.1f} s")
    ratio = fold_rps / track.rps if track.rps else float("inf")
    say(f"fold_rps/track_rps = {ratio:.2f} (one scheduled run against one track instance): counting "
        f"{'keeps up' if ratio >= 1 else 'falls behind'}")
    # Deployed, each function has its vCPU to itself and the emulators' work is Google's: what one
    # drain's CPU folds against what one track instance's CPU answers is the deployed ratio.
    say(f"cpu: {fold_cpu_us:.0f} us per event in the scheduled run's process, {track.cpu_us_per_click:.0f} us per "
        f"click in the track instance: one "
        f"drain's CPU counts what {track.cpu_us_per_click / fold_cpu_us if fold_cpu_us else 0:.1f} track "
        f"instances' CPU answers")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    collect_seldom()  # the scheduled runs run in this process: with the aggregate function's collector
    # Poison events are logged as warnings by the thousand here; only errors are news.
    logging.getLogger("o7tracker").setLevel(logging.ERROR)
    try:
        return 0 if soak(args) else 1
    except emulators.EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
