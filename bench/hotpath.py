"""Hot path benchmark: what a click costs next to a function that only redirects.

    python -m bench.hotpath [--seconds 5] [--connections 1,16,64] [--rounds 3] [--workers 2] [--threads 32]

Starts the Firestore and Pub/Sub emulators and four function servers on free
ports, all with the same server settings (functions-framework's gunicorn,
``WORKERS`` workers of ``THREADS`` threads each), and drives them with wrk on
127.0.0.1, case after case at each connection count, so that the machine's
noise falls on every case alike:

- ``bare``: ``bench/bare``, a function that only answers a constant 307: the ceiling;
- ``naive``: ``bench/naive``, bare plus one publish with the Pub/Sub client's
  default settings, waited for;
- ``hit``: the real track function, every campaign in its cache;
- ``miss``: the real track function with ``CACHE_TTL_SECONDS`` so small that
  every click finds its campaign's entry expired (concurrent misses for one
  id still share a read, as they do in production);
- ``unknown``: the ``hit`` server flooded with random ids that name no campaign.

It prints requests/s and p50/p99 latency per case and connection count,
Firestore reads per request, server CPU per request, the clicks answered
against those published (drained from each server's own subscription), cold
starts and the track server's memory after the load. The last line sums it up
at 64 connections: rates and p99 of each case's median round, and ratios as the
median of the per-round ratios (bare and the case ran back to back).
wrk is required (``apt-get install wrk``); the machine's other load is shown,
since the emulators, wrk and the servers all share its cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from bench import wrk
from local import emulators
from shared import config

ROOT = Path(__file__).resolve().parent.parent
LOCATION = "https://example.com/landing"
FALLBACK = "https://example.com/fallback"
# The server settings every case shares (WORKERS and THREADS, as functions-framework
# reads them). Two workers: one per core, two GILs instead of one. 32 threads each:
# a click holds its thread while it waits for Pub/Sub, so 2 x 32 lets all 64
# connections wait at once; more threads only add GIL contention, which costs
# the bare function most.
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 32
MISS_TTL_SECONDS = "0.001"
# Longer than any run, so that the hit case never sees an entry expire.
HIT_TTL_SECONDS = "3600"
WRK_TIMEOUT_S = 10.0  # far above any p99 here: a timed-out request would blur answered vs published
# Paths per wrk run of a known-ids case: campaign ids drawn at random, requested in turn.
KNOWN_PATHS = 4096
# Paths per wrk run of the unknown case, each a fresh id: at ~3,000 req/s, over 20 s before one
# comes again, far beyond the negative cache's 5 s TTL, so that every request misses it.
UNKNOWN_PATHS = 60_000
# 15 digits: well-formed ids (below 2^53) that, drawn at random, name no campaign.
UNKNOWN_IDS = range(10**14, 10**15)


class Stop(Exception):
    """SIGTERM, turned into an exception so that every ``finally`` stops what was started."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


# --- servers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    name: str
    source: str  # the function's main.py, relative to the repository
    target: str
    topic: str | None  # its own click topic, drained at the end; None: publishes nothing
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Server:
    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    cold_start_seconds: float = 0.0

    def stats(self) -> dict[str, int]:
        """The bench-only counters of :mod:`bench.server`, summed over its workers."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", "/__bench/stats")
            return dict(json.loads(connection.getresponse().read()))
        finally:
            connection.close()

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def cpu_seconds(self) -> float:
        """User plus system CPU of the gunicorn master and its workers so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [self.process.pid, *self.worker_pids()]:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except FileNotFoundError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total


def server_specs() -> list[ServerSpec]:
    track = "functions/track/main.py"
    return [
        ServerSpec("bare", "bench/bare/main.py", "bare", None),
        ServerSpec("naive", "bench/naive/main.py", "naive", "bench-naive"),
        ServerSpec("track", track, "track", "bench-track", {config.CACHE_TTL_SECONDS: HIT_TTL_SECONDS}),
        ServerSpec("track_miss", track, "track", "bench-track-miss", {config.CACHE_TTL_SECONDS: MISS_TTL_SECONDS}),
    ]


def start_server(
    spec: ServerSpec, base_env: dict[str, str], workers: int, threads: int, probe_path: str, log_dir: Path,
) -> Server:
    """Start one server and time its cold start: process start to its first redirect to the campaign."""
    port = emulators.free_port()
    env = {
        **base_env, **spec.env,
        "WORKERS": str(workers), "THREADS": str(threads),
        "BENCH_LOCATION": LOCATION, config.FALLBACK_URL: FALLBACK,
        config.CLICKS_TOPIC: spec.topic or "unused",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "bench.server", "--source", str(ROOT / spec.source),
               "--target", spec.target, "--port", str(port)]
    with (log_dir / f"{spec.name}.log").open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(spec, port, process)
    try:
        _wait_first_redirect(server, probe_path)
    except BaseException:
        emulators.stop_process_group(process)
        raise
    server.cold_start_seconds = time.monotonic() - started
    return server


def _wait_first_redirect(server: Server, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the {server.spec.name} server exited with status {server.process.returncode}")
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            answer.read()
            if answer.status == 307 and answer.getheader("Location") == LOCATION:
                return
            raise RuntimeError(f"the {server.spec.name} server answered {answer.status} "
                               f"to {answer.getheader('Location')!r}, expected 307 to {LOCATION!r}")
        except (ConnectionRefusedError, ConnectionResetError):
            time.sleep(0.01)  # not listening yet
        finally:
            connection.close()
    raise RuntimeError(f"the {server.spec.name} server did not redirect within {timeout:.0f}s")


@contextmanager
def started_servers(
    specs: Sequence[ServerSpec], env: dict[str, str], workers: int, threads: int, probe_path: str, log_dir: Path,
) -> Iterator[dict[str, Server]]:
    """One after another, so that each cold start has the machine to itself; all stopped on exit."""
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for spec in specs:
            server = start_server(spec, env, workers, threads, probe_path, log_dir)
            stack.callback(emulators.stop_process_group, server.process)
            servers[spec.name] = server
        yield servers


# --- load ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    server: str
    unknown_ids: bool = False

    @property
    def expected_location(self) -> str:
        return FALLBACK if self.unknown_ids else LOCATION

    def paths(self, campaign_ids: Sequence[int]) -> list[str]:
        """A fresh draw for one wrk run: distinct unknown ids, or campaign ids picked at random."""
        if self.unknown_ids:
            ids = random.sample(UNKNOWN_IDS, UNKNOWN_PATHS)
        else:
            ids = random.choices(campaign_ids, k=KNOWN_PATHS)
        return [f"/track/{i}?platform=Android" for i in ids]

    def load(self, server: Server, campaign_ids: Sequence[int], connections: int, seconds: float,
             workdir: Path) -> wrk.WrkResult:
        return wrk.run_wrk(server.port, self.paths(campaign_ids), [self.expected_location], connections, seconds,
                           workdir, WRK_TIMEOUT_S, threads=min(connections, 2))


CASES = (
    Case("bare", "bare"),
    Case("naive", "naive"),
    Case("hit", "track"),
    Case("miss", "track_miss"),
    Case("unknown", "track", unknown_ids=True),
)


@dataclass
class Measured:
    """One case at one connection count: the wrk figures and what the server did meanwhile."""

    case: Case
    connections: int
    round: int
    load: wrk.WrkResult
    reads: int
    cpu_seconds: float

    @property
    def reads_per_request(self) -> float:
        return self.reads / self.load.requests if self.load.requests else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.cpu_seconds / self.load.requests if self.load.requests else 0.0


def warm_up(case: Case, server: Server, campaign_ids: Sequence[int], workdir: Path, cached: int) -> int:
    """Connections, gRPC channels and, for ``hit``, every campaign in every worker's cache; the clicks answered.

    Which worker takes a connection is up to the kernel, so the hit case is
    repeated until each worker has read each campaign once.
    """
    answered = 0
    for _ in range(20):
        warm = case.load(server, campaign_ids, 64, 1.0, workdir)
        answered += 0 if case.unknown_ids else warm.ok
        if case.name != "hit" or server.stats()["reads"] >= cached:
            return answered
    raise RuntimeError(f"the hit case's campaigns were not all cached: {server.stats()['reads']} of {cached} reads")


def measure(
    case: Case, server: Server, campaign_ids: Sequence[int], workdir: Path, connections: int, round_: int,
    seconds: float,
) -> Measured:
    before, cpu_before = server.stats(), server.cpu_seconds()
    load = case.load(server, campaign_ids, connections, seconds, workdir)
    after, cpu_after = server.stats(), server.cpu_seconds()
    return Measured(case, connections, round_, load, after["reads"] - before["reads"], cpu_after - cpu_before)


# --- clicks answered against clicks published ---------------------------------------------------


def drain(project: str, subscription: str) -> tuple[int, int]:
    """Pull and ack until empty: (messages, distinct click ids). A redelivery would show as their difference."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(project, subscription)
    messages, empty_pulls = 0, 0
    click_ids: set[str] = set()
    try:
        while empty_pulls < 3:  # an empty answer can come early; three in a row means empty
            answer = subscriber.pull(subscription=path, max_messages=1000, timeout=10)
            if not answer.received_messages:
                empty_pulls += 1
                continue
            empty_pulls = 0
            for received in answer.received_messages:
                messages += 1
                click_ids.add(_click_id(received.message.data) or received.message.message_id)
            subscriber.acknowledge(subscription=path, ack_ids=[r.ack_id for r in answer.received_messages])
    finally:
        subscriber.close()
    return messages, len(click_ids)


def account(server: Server, answered_seen: int, project: str) -> Accounting:
    assert server.spec.topic is not None
    messages, published = drain(project, server.spec.topic + "-sub")
    return Accounting(server.spec.name, server.stats()["redirects"], answered_seen, published, messages)


def _click_id(data: bytes) -> str | None:
    try:
        value = json.loads(data).get("click_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Accounting:
    server: str
    answered_by_server: int  # 307s to the campaign the server produced, wrk's abandoned ones included
    answered_seen: int  # 307s to the campaign wrk (and the cold-start probe) received
    published: int  # distinct clicks found in the subscription
    messages: int

    @property
    def lost(self) -> int:
        """Clicks redirected yet not published: must be 0."""
        return max(0, max(self.answered_by_server, self.answered_seen) - self.published)


# --- setup --------------------------------------------------------------------------------------


def create_campaigns(count: int) -> list[int]:
    from google.cloud import firestore

    from shared.ids import keyed_ids
    from shared.legacy_ids import save_registry
    from shared.store import CampaignStore

    settings = config.Settings.from_env()
    store = CampaignStore(firestore.Client(), settings.counter_shards, keyed_ids(settings))
    # A fresh database has no ids from before ids were keyed: with its (empty)
    # registry written, as on a deployment, the track function checks every id.
    save_registry(store.db, [])
    return [store.create({"redirect_url": LOCATION, "platforms": ["Android", "IPhone"]}).id for _ in range(count)]


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- report -------------------------------------------------------------------------------------


def median_by_case(results: Sequence[Measured]) -> dict[tuple[str, int], Measured]:
    """Over rounds, the run with the median rate of each case and connection count."""
    grouped: dict[tuple[str, int], list[Measured]] = {}
    for result in results:
        grouped.setdefault((result.case.name, result.connections), []).append(result)
    chosen = {}
    for key, runs in grouped.items():
        runs.sort(key=lambda r: r.load.rps)
        chosen[key] = runs[(len(runs) - 1) // 2]
    return chosen


def paired_ratios(results: Sequence[Measured], case: str, connections: int) -> list[float]:
    """Each round's case/bare rate: the two ran back to back, so a change in the machine's load cancels out."""
    rates = {(r.case.name, r.round): r.load.rps for r in results if r.connections == connections}
    rounds = sorted({r.round for r in results})
    return [rates[(case, n)] / rates[("bare", n)] for n in rounds if rates[("bare", n)]]


def print_table(chosen: dict[tuple[str, int], Measured], connections: Sequence[int]) -> None:
    print(f"{'case':<8} {'conns':>5} {'req/s':>8} {'vs bare':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'reads/req':>9} {'cpu us/req':>10} {'ok':>8} {'errors':>6}")
    for conns in connections:
        bare = chosen[("bare", conns)].load.rps
        for case in CASES:
            m = chosen[(case.name, conns)]
            reads = f"{m.reads_per_request:.3f}" if case.server.startswith("track") else "-"
            print(f"{case.name:<8} {conns:>5} {m.load.rps:>8.0f} {m.load.rps / bare:>7.2f} {m.load.p50_ms:>7.2f} "
                  f"{m.load.p99_ms:>7.2f} {reads:>9} {m.cpu_us_per_request:>10.0f} {m.load.ok:>8} {m.load.errors:>6}")


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration of each case (default 5)")
    parser.add_argument("--connections", default="1,16,64", help="connection counts (default 1,16,64)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every case; the median is shown (default 3)")
    parser.add_argument("--campaigns", type=int, default=64, help="campaigns the clicks spread over")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", DEFAULT_WORKERS)))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", DEFAULT_THREADS)))
    args = parser.parse_args(argv)
    args.connection_counts = [int(c) for c in args.connections.split(",")]
    if 64 not in args.connection_counts:
        parser.error("--connections must include 64: the summary line compares at 64")
    return args


def print_settings(args: argparse.Namespace, base_env: dict[str, str]) -> None:
    defaults = config.Settings.from_env(base_env)
    load1, load5, _ = os.getloadavg()
    print("hotpath settings:")
    print(f"  server: functions-framework {_version('functions-framework')} gunicorn gthread via bench.server, "
          f"WORKERS={args.workers} THREADS={args.threads} (same for every case)")
    print(f"  load: wrk, {args.seconds:g}s per case, connections {args.connections}, threads min(conns, 2), "
          f"rounds {args.rounds} (median), cases interleaved at each connection count, timeout {WRK_TIMEOUT_S:g}s")
    print(f"  track: PUBLISH_MAX_LATENCY_SECONDS={defaults.publish_max_latency_seconds} "
          f"PUBLISH_TIMEOUT_SECONDS={defaults.publish_timeout_seconds}; hit: CACHE_TTL_SECONDS={HIT_TTL_SECONDS}; "
          f"miss: CACHE_TTL_SECONDS={MISS_TTL_SECONDS} (every entry expired on its next click; "
          f"concurrent misses on one id still share one read); "
          f"{args.campaigns} campaigns, ids picked at random")
    print("  naive: pubsub_v1.PublisherClient() with default batch settings, result() per request")
    print(f"  machine: {os.cpu_count()} CPUs, load average {load1:.2f} / {load5:.2f} before start "
          "(emulators, wrk and servers share them)")
    sys.stdout.flush()


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="o7tracker-hotpath-"))
    with emulators.running(log_dir=workdir) as emulator_env:
        os.environ.update(emulator_env)
        os.environ.setdefault(config.CAMPAIGN_ID_KEY, secrets.token_urlsafe(32))
        project = emulator_env[config.PROJECT]
        base_env = {**os.environ, **emulator_env}
        print_settings(args, base_env)
        specs = server_specs()
        for spec in specs:
            if spec.topic:
                emulators.create_topic_and_subscription(project, spec.topic, spec.topic + "-sub")
        campaign_ids = create_campaigns(args.campaigns)
        probe = f"/track/{campaign_ids[0]}?platform=Android"
        with started_servers(specs, base_env, args.workers, args.threads, probe, workdir) as servers:
            for name, server in servers.items():
                print(f"cold start {name}: {server.cold_start_seconds:.2f}s (process start to first redirect)")
            seen = {name: 1 for name in servers}  # the cold-start probe's redirect
            for case in CASES:
                seen[case.server] += warm_up(case, servers[case.server], campaign_ids, workdir,
                                             cached=args.workers * len(campaign_ids))
            results = []
            for conns in args.connection_counts:
                for round_ in range(args.rounds):
                    for case in CASES:
                        result = measure(case, servers[case.server], campaign_ids, workdir, conns, round_,
                                         args.seconds)
                        seen[case.server] += 0 if case.unknown_ids else result.load.ok
                        results.append(result)
                        print(f"  {case.name:<8} c={conns:<3} {result.load.rps:>7.0f} req/s  "
                              f"p99 {result.load.p99_ms:.1f} ms", flush=True)
            track_workers = servers["track"].worker_pids()
            rss = [vm_rss_kib(pid) for pid in track_workers]
            accounting = [account(server, seen[name], project) for name, server in servers.items() if server.spec.topic]
        return report(args, results, servers, rss, accounting)


def report(
    args: argparse.Namespace, results: Sequence[Measured], servers: dict[str, Server], rss: Sequence[int],
    accounting: Sequence[Accounting],
) -> int:
    chosen = median_by_case(results)
    print()
    print_table(chosen, args.connection_counts)
    print("(median of the rounds; reads/req: Firestore reads per request, counted in bench.server; "
          "cpu us/req: the server processes' own CPU per request)")
    print()
    for a in accounting:
        print(f"clicks {a.server:<10} answered {a.answered_by_server} (wrk saw {a.answered_seen}; the rest were "
              f"in flight when wrk stopped), published {a.published} ({a.messages} messages), lost {a.lost}")
    print(f"cold start: bare {servers['bare'].cold_start_seconds:.2f}s, "
          f"track {servers['track'].cold_start_seconds:.2f}s")
    print(f"track server RSS after load: {', '.join(f'{kib / 1024:.0f} MiB' for kib in rss)} "
          f"(each of {len(rss)} workers)")
    bare, track = chosen[("bare", 64)].load, chosen[("hit", 64)].load
    ratios = {case: paired_ratios(results, case, 64) for case in ("hit", "naive")}
    for case, values in ratios.items():
        print(f"{case}/bare at 64 connections, round by round: {', '.join(f'{v:.2f}' for v in values)} "
              f"(median {statistics.median(values):.2f})")
    lost = sum(a.lost for a in accounting)
    load1, load5, _ = os.getloadavg()
    print(f"machine load average at the end: {load1:.2f} / {load5:.2f}")
    # rps and p99 are each case's median round; the ratios are medians of the paired rounds above.
    print(f"hotpath: bare_rps={bare.rps:.0f} track_rps={track.rps:.0f} ratio={statistics.median(ratios['hit']):.2f} "
          f"naive_ratio={statistics.median(ratios['naive']):.2f} p99_bare_ms={bare.p99_ms:.1f} "
          f"p99_track_ms={track.p99_ms:.1f} lost={lost}")
    return 1 if lost else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    wrk.wrk_check()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run(args)
    except (KeyboardInterrupt, Stop):
        print("stopped; everything started was stopped", file=sys.stderr)
        return 130
    except (emulators.EmulatorError, RuntimeError) as exc:  # already stopped: the with-blocks saw it pass
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
