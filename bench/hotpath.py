"""Hot path benchmark: one track instance as deployed, side by side with bare functions.

    python -m bench.hotpath [--seconds 4] [--connections 1,16,64] [--rounds 3] [--stall-seconds 2] [--profile CASE]

Starts the Firestore and Pub/Sub emulators and one server per function, each
ONE worker started with ``functions-framework --source ... --target ...`` as
Cloud Run functions starts it, and drives them with wrk on 127.0.0.1, case
after case in every round, so that the machine's noise falls on all alike:

- ``bare_flask``: ``bench/bare_flask``, a Flask function that only answers 307,
  ``WORKERS=1 THREADS=80`` (gunicorn gthread, as the Flask track function ran);
- ``bare_aio``: ``bench/bare_aio``, an ``@functions_framework.aio.http``
  function that only answers 307 (one uvicorn worker on uvloop and httptools);
- ``naive``: ``bench/naive``, bare_flask plus one publish with the Pub/Sub
  client's defaults, waited for: what a first version would do;
- ``hit``, ``miss``, ``unknown``: the track function, staged by
  ``./deploy.sh --dry-run`` and run with the ``--set-env-vars`` it deploys
  with. ``hit``: every campaign cached; ``miss``: ``CACHE_TTL_SECONDS`` so
  small that every click finds its entry expired; ``unknown``: the hit server
  flooded with ids that name no campaign;
- ``stall``: the hit server at the summary's connection count while the
  Pub/Sub emulator is paused (SIGSTOP) for ``--stall-seconds`` of the run.

Firestore reads are counted on the wire (:mod:`bench.rpc_count`), nothing of
the bench runs inside a server. Every wrk run sends its own ``Referer``, which
the click event keeps, so each answered click is traced to its run: published
(pulled from the server's subscription after each run and at the end, until
every answered click is traced or none has come for 30 s) or in the replay log
(the server's ERROR lines, read with :mod:`tools.replay`); ``lost`` counts the rest.
The last line sums it up at 64 connections: each case's median rate and p99
over the rounds, and ratios as the median of the per-round ratios (the cases of
a round ran back to back). wrk is required (``apt-get install wrk``).

Before the load, track, bare_aio, bare_flask and ``clients_aio`` are each
started and stopped once per round, in turns, and their cold starts (process
start to the first redirect to a campaign) reported as medians, the ratios as
medians of the per-round ratios. ``clients_aio`` (``bench/bare_aio`` with
``BENCH_IMPORT_CLIENTS=1``) is bare_aio that also imports the official Firestore and Pub/Sub clients: the
floor of any function that uses them, against which the track function's own
cold start work shows.

``--profile hit,bare_aio`` (any cases but stall) runs each once more at the
end with py-spy attached to its server's worker, and prints where the CPU went:
by thread, and by function, in microseconds per request.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType

from bench import wrk
from bench.rpc_count import CountingProxy
from local import emulators
from shared import config
from shared.events import ClickEvent, split_events
from tools.replay import Summary, click_events, read_entries

ROOT = Path(__file__).resolve().parent.parent
LOCATION = "https://example.com/landing"
FALLBACK = "https://example.com/fallback"
FLASK_THREADS = "80"  # deploy.sh's TRACK_CONCURRENCY, the THREADS the Flask track function deployed with
SUMMARY_CONNECTIONS = 64
MISS_TTL_SECONDS = "0.001"
HIT_TTL_SECONDS = "3600"  # longer than any run: the hit case never sees an entry expire
# Far above any p99 here but a stalled publish's: a timed-out request would blur answered vs published.
WRK_TIMEOUT_S = 30.0
# Paths per wrk run of a known-ids case: campaign ids drawn at random, requested in turn.
KNOWN_PATHS = 4096
# Paths per wrk run of the unknown case, each a fresh id: at ~6,000 req/s, 10 s before one
# comes again, beyond the negative cache's 5 s TTL, so that every request misses it.
UNKNOWN_PATHS = 60_000
# 15 digits: well-formed ids (below 2^53) that, drawn at random, name no campaign.
UNKNOWN_IDS = range(10**14, 10**15)
RUN_REFERRER = "https://bench.example/run/{}"  # one per wrk run; the click event keeps it
STALL_STARTS_AFTER_S = 1.0
# Pulls in flight at once when draining a subscription: the emulator answers at most 100 messages a pull.
PULLERS = 4
PULL_TIMEOUT_S = 30.0  # each pull is answered at once: only a hung emulator makes one wait for this
# At the end, how long a click not yet traced may take to arrive after the last one that did
# before it counts as lost.
SETTLE_PATIENCE_S = 30.0


class Stop(Exception):
    """SIGTERM, turned into an exception so that every ``finally`` stops what was started."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


# --- servers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    name: str
    source: Path  # the function's main.py
    target: str
    env: dict[str, str]  # its own settings, on top of the emulators'
    topic: str | None = None  # its click topic; the track servers' have a subscription "<topic>-sub"
    track: bool = False  # the track function: Firestore calls counted, clicks accounted for
    deploy_flags: str = ""  # for the report: how deploy.sh deploys it


@dataclass
class Server:
    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    proxy: CountingProxy | None
    listening_seconds: float = 0.0  # process start to accepting a connection
    cold_start_seconds: float = 0.0  # process start to the first redirect to a campaign

    def stop(self, grace_seconds: float = 10.0) -> None:
        emulators.stop_process_group(self.process, grace_seconds)
        if self.proxy:
            self.proxy.close()

    def reads(self) -> int:
        """Firestore calls so far: each is one campaign lookup."""
        return self.proxy.calls if self.proxy else 0

    def pids(self) -> list[int]:
        """The gunicorn arbiter functions-framework runs, and its worker."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return [self.process.pid, *map(int, children.split())]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(Path(f"/proc/{pid}/stat")) for pid in self.pids())

    def rss_mib(self) -> float:
        """The worker's resident memory, where the function lives (the arbiter only watches it)."""
        worker = self.pids()[-1]
        for line in Path(f"/proc/{worker}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def deployed_track(name: str, project: str, topic: str, workdir: Path, settings: dict[str, str]) -> ServerSpec:
    """The track function as ``./deploy.sh`` deploys it: its staged source, entry point and environment.

    ``settings`` go through deploy.sh's own pass-through of optional settings,
    so the function sees exactly what a deploy with them set would give it.
    """
    stage = workdir / f"stage-{name}"
    env = {**os.environ, config.PROJECT: project, "DEPLOY_STAGE_DIR": str(stage), config.CLICKS_TOPIC: topic,
           config.FALLBACK_URL: FALLBACK, **settings}
    env.pop("AUTH_PASSWORD", None)  # a dry run needs no secret
    done = subprocess.run([str(ROOT / "deploy.sh"), "--dry-run"], env=env, capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"./deploy.sh --dry-run failed: {done.stderr.strip()}")
    line = next((line for line in done.stdout.splitlines() if line.startswith("+ gcloud functions deploy track ")),
                None)
    if line is None:
        raise RuntimeError("./deploy.sh --dry-run printed no 'gcloud functions deploy track' command")
    flags = dict(arg[2:].split("=", 1) for arg in shlex.split(line[2:]) if arg.startswith("--") and "=" in arg)
    function_env = dict(pair.split("=", 1) for pair in flags["set-env-vars"].split(","))
    deploy_flags = " ".join(f"--{k}={flags[k]}" for k in ("cpu", "memory", "concurrency") if k in flags)
    return ServerSpec(name, Path(flags["source"]) / "main.py", flags["entry-point"], function_env, topic,
                      track=True, deploy_flags=deploy_flags)


def server_specs(project: str, workdir: Path) -> list[ServerSpec]:
    flask_env = {"WORKERS": "1", "THREADS": FLASK_THREADS}
    return [
        ServerSpec("bare_flask", ROOT / "bench/bare_flask/main.py", "bare_flask", flask_env),
        ServerSpec("bare_aio", ROOT / "bench/bare_aio/main.py", "bare_aio", {"WORKERS": "1"}),
        ServerSpec("naive", ROOT / "bench/naive/main.py", "naive", {**flask_env, config.CLICKS_TOPIC: "bench-naive"},
                   topic="bench-naive"),
        deployed_track("track", project, "bench-track", workdir, {config.CACHE_TTL_SECONDS: HIT_TTL_SECONDS}),
        deployed_track("track_miss", project, "bench-track-miss", workdir,
                       {config.CACHE_TTL_SECONDS: MISS_TTL_SECONDS}),
    ]


def start_server(spec: ServerSpec, base_env: dict[str, str], probe_path: str, log_dir: Path) -> Server:
    """Start one server and time its cold start: process start to its first redirect to the campaign."""
    port = emulators.free_port()
    proxy = CountingProxy(base_env["FIRESTORE_EMULATOR_HOST"]) if spec.track else None
    env = {**base_env, **spec.env, "BENCH_LOCATION": LOCATION}
    env.pop("PYTHONPATH", None)  # the function imports what its source folder holds, as deployed
    if proxy:
        env["FIRESTORE_EMULATOR_HOST"] = proxy.host
    command = [str(Path(sys.executable).with_name("functions-framework")), "--source", str(spec.source),
               "--target", spec.target, "--host", "127.0.0.1", "--port", str(port)]
    log_path = log_dir / f"{spec.name}.log"
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = emulators.start_session(command, env=env, cwd=spec.source.parent, log=log)
    server = Server(spec, port, process, log_path, proxy)
    try:
        listening = _wait_first_redirect(server, probe_path)
    except BaseException:
        server.stop()
        raise
    server.cold_start_seconds = time.monotonic() - started
    server.listening_seconds = listening - started
    return server


def _wait_first_redirect(server: Server, path: str, timeout: float = 60.0) -> float:
    """When the server first accepted a connection; returns once it redirected to the campaign."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the {server.spec.name} server exited with status {server.process.returncode}; "
                               f"see {server.log_path}")
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.connect()
            listening = time.monotonic()
            connection.request("GET", path)
            answer = connection.getresponse()
            answer.read()
            if answer.status == 307 and answer.getheader("Location") == LOCATION:
                return listening
            raise RuntimeError(f"the {server.spec.name} server answered {answer.status} "
                               f"to {answer.getheader('Location')!r}, expected 307 to {LOCATION!r}")
        except (ConnectionRefusedError, ConnectionResetError):
            time.sleep(0.01)  # not listening yet
        finally:
            connection.close()
    raise RuntimeError(f"the {server.spec.name} server did not redirect within {timeout:.0f}s")


# Started again and again before the load, for cold starts with less noise than one start each.
COLD_STARTS = ("track", "bare_aio", "bare_flask")


def clients_floor_spec() -> ServerSpec:
    """``bare_aio`` plus the imports of the official clients the track function uses: a floor for its cold start.

    Only its cold start is measured; it takes no load.
    """
    return ServerSpec("clients_aio", ROOT / "bench/bare_aio/main.py", "bare_aio",
                      {"WORKERS": "1", "BENCH_IMPORT_CLIENTS": "1"})


def cold_start_specs(specs: Sequence[ServerSpec]) -> list[ServerSpec]:
    """The servers whose cold starts are taken, clients_aio right after bare_aio, the ratio it is read by."""
    started = [spec for spec in specs if spec.name in COLD_STARTS]
    after_bare = next(i for i, spec in enumerate(started) if spec.name == "bare_aio") + 1
    return [*started[:after_bare], clients_floor_spec(), *started[after_bare:]]


@dataclass(frozen=True)
class ColdStart:
    listening: float  # process start to accepting a connection: mostly imports
    redirected: float  # process start to the first redirect to a campaign


def cold_starts(
    specs: Sequence[ServerSpec], env: dict[str, str], probe_path: str, log_dir: Path, rounds: int
) -> dict[str, list[ColdStart]]:
    """Cold starts of each server, started and stopped ``rounds`` times in turns, one at a time."""
    seconds: dict[str, list[ColdStart]] = defaultdict(list)
    for _ in range(rounds):
        for spec in specs:
            server = start_server(spec, env, probe_path, log_dir)
            try:
                seconds[spec.name].append(ColdStart(server.listening_seconds, server.cold_start_seconds))
            finally:
                # Killed at once: nothing of it is kept, and a graceful exit takes a worker up to a second.
                server.stop(grace_seconds=0.0)
    return seconds


@contextmanager
def started_servers(
    specs: Sequence[ServerSpec], env: dict[str, str], probe_path: str, log_dir: Path
) -> Iterator[dict[str, Server]]:
    """One after another, so that each cold start has the machine to itself; all stopped on exit."""
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for spec in specs:
            server = start_server(spec, env, probe_path, log_dir)
            stack.callback(server.stop)
            servers[spec.name] = server
        yield servers


# --- load ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    server: str
    track: bool = False  # on a track server: Firestore reads and clicks accounted for
    unknown_ids: bool = False
    stall: bool = False

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


CASES = (
    Case("bare_flask", "bare_flask"),
    Case("bare_aio", "bare_aio"),
    Case("naive", "naive"),
    Case("hit", "track", track=True),
    # After hit and before miss: the lookups still in flight when wrk stops go to no other track case.
    Case("unknown", "track", track=True, unknown_ids=True),
    Case("miss", "track_miss", track=True),
    # Last: the publishes it left waiting land while the next round starts on another server.
    Case("stall", "track", track=True, stall=True),
)


@dataclass
class Run:
    """One wrk run of a case, and what its server did meanwhile."""

    case: Case
    connections: int
    round: int  # -1: a warm-up
    referrer: str
    load: wrk.WrkResult
    reads: int
    cpu_seconds: float

    @property
    def reads_per_request(self) -> float:
        return self.reads / self.load.requests if self.load.requests else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.cpu_seconds / self.load.requests if self.load.requests else 0.0


@dataclass
class Bench:
    servers: dict[str, Server]
    campaign_ids: Sequence[int]
    workdir: Path
    pubsub_port: int
    stall_seconds: float
    project: str
    runs: list[Run] = field(default_factory=list)
    published: list[ClickEvent] = field(default_factory=list)  # pulled from the track servers' subscriptions

    def run(self, case: Case, connections: int, seconds: float, round_: int) -> Run:
        server = self.servers[case.server]
        referrer = RUN_REFERRER.format(len(self.runs))
        before, cpu_before = server.reads(), server.cpu_seconds()
        if case.stall:
            load = self._stalled(server, case, connections, seconds, referrer)
        else:
            load = self._wrk(server, case, connections, seconds, referrer)
        run = Run(case, connections, round_, referrer, load, server.reads() - before,
                  server.cpu_seconds() - cpu_before)
        self.runs.append(run)
        self.drain(server)
        return run

    def drain(self, server: Server) -> list[ClickEvent]:
        """Pull what a track server published, between runs, as the aggregator would keep doing.

        Left to pile up, a whole benchmark's clicks (hundreds of thousands)
        would sit in the Pub/Sub emulator's memory, and its garbage collector's
        pauses would show in the Publish round trips every click waits for.
        Only what waits now is pulled: a click still on its way is pulled by the
        next drain, or by :meth:`settle`.
        """
        arrived: list[ClickEvent] = []
        if server.spec.topic is not None and server.spec.track:
            arrived = pull_waiting(self.project, server.spec.topic + "-sub")
            self.published += arrived
        return arrived

    def settle(self) -> Accounting:
        """Every track run's clicks accounted for: the subscriptions drained until each answered
        click is traced, or until none has arrived for ``SETTLE_PATIENCE_S``; what is missing then is lost."""
        track_servers = [server for server in self.servers.values() if server.spec.track]
        last_arrival = time.monotonic()
        while True:
            arrived = [event for server in track_servers for event in self.drain(server)]
            if arrived:
                last_arrival = time.monotonic()
            accounting = account(self.runs, self.published, [e for s in track_servers for e in logged(s)])
            if accounting.lost == 0 or time.monotonic() - last_arrival > SETTLE_PATIENCE_S:
                return accounting
            time.sleep(0.5)

    def _wrk(self, server: Server, case: Case, connections: int, seconds: float, referrer: str) -> wrk.WrkResult:
        return wrk.run_wrk(server.port, case.paths(self.campaign_ids), [case.expected_location], connections,
                           seconds, self.workdir, WRK_TIMEOUT_S, threads=min(connections, 2),
                           headers={"Referer": referrer})

    def _stalled(self, server: Server, case: Case, connections: int, seconds: float, referrer: str) -> wrk.WrkResult:
        """wrk for ``seconds``, the Pub/Sub emulator paused from the first second for ``stall_seconds``."""
        with ThreadPoolExecutor(1) as pool:
            load = pool.submit(self._wrk, server, case, connections, seconds, referrer)
            time.sleep(STALL_STARTS_AFTER_S)
            with emulators.paused(self.pubsub_port):
                time.sleep(self.stall_seconds)
            return load.result()

    def warm_up(self, case: Case) -> None:
        """Connections, gRPC channels and, for ``hit``, every campaign in the cache (one worker, one cache)."""
        for _ in range(20):
            self.run(case, SUMMARY_CONNECTIONS, 1.0, -1)
            server = self.servers[case.server]
            if case.name != "hit" or server.reads() >= len(self.campaign_ids):
                return
        raise RuntimeError(f"the hit case's campaigns were not all cached: {server.reads()} reads")


# --- clicks answered against clicks published or logged -----------------------------------------


def pull_waiting(project: str, subscription: str) -> list[ClickEvent]:
    """Pull and ack what waits on the subscription now, ``PULLERS`` pulls at a time, each puller
    until the emulator answers it empty.

    Each pull asks for an answer at once (``return_immediately``, deprecated
    for production pulls): an open pull on an empty subscription is answered
    only a second before its deadline, which made every drain end on seconds
    of waiting; what is still on its way is for the next pull to take.
    """
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(project, subscription)
    request = {"subscription": path, "max_messages": 1000, "return_immediately": True}

    def until_empty() -> list[ClickEvent]:
        events: list[ClickEvent] = []
        while True:
            answer = subscriber.pull(request=request, timeout=PULL_TIMEOUT_S)
            if not answer.received_messages:
                return events
            # The bench's own subscriptions: anything but a valid click is a bug worth stopping for.
            events += [ClickEvent.decode(data) for received in answer.received_messages
                       for data in split_events(received.message.data)]
            subscriber.acknowledge(subscription=path, ack_ids=[r.ack_id for r in answer.received_messages])

    try:
        with ThreadPoolExecutor(PULLERS) as pool:
            pulled = [pool.submit(until_empty) for _ in range(PULLERS)]
            return [event for puller in pulled for event in puller.result()]
    finally:
        subscriber.close()


def logged(server: Server) -> list[ClickEvent]:
    """The replay log: the clicks whose publish the server could not confirm, as tools.replay reads them."""
    with server.log_path.open(encoding="utf-8", errors="replace") as stream:
        return list(click_events(read_entries(stream, server.log_path.name), Summary()))


@dataclass(frozen=True)
class Accounting:
    answered: int  # 307s to the campaign that wrk received
    traced: int  # distinct clicks of those runs published or in the replay log
    published: int
    logged: int
    lost: int  # answered clicks of a run beyond what was traced to it: must be 0
    logged_by_case: dict[str, int]  # clicks whose publish was not confirmed, by case (and warm-up or round)


def account(runs: Sequence[Run], published: Sequence[ClickEvent], logged_events: Sequence[ClickEvent]) -> Accounting:
    """The track runs' clicks, traced to each run by the referrer it sent; a run's clicks answered
    after wrk stopped counting are traced but not answered, so they never cover a loss in another run."""
    by_run: dict[str, tuple[set[str], set[str]]] = {}
    for events, index in ((published, 0), (logged_events, 1)):
        for event in events:
            by_run.setdefault(event.referrer, (set(), set()))[index].add(event.click_id)
    answered = traced = n_published = n_logged = lost = 0
    logged_by_case: dict[str, int] = {}
    for run in runs:
        if not run.case.track or run.case.unknown_ids:
            continue
        run_published, run_logged = by_run.get(run.referrer, (set(), set()))
        answered += run.load.ok
        traced += len(run_published | run_logged)
        n_published += len(run_published)
        n_logged += len(run_logged)
        lost += max(0, run.load.ok - len(run_published | run_logged))
        if run_logged:
            key = f"{run.case.name} {'warm-up' if run.round < 0 else f'c={run.connections}'}"
            logged_by_case[key] = logged_by_case.get(key, 0) + len(run_logged)
    return Accounting(answered, traced, n_published, n_logged, lost, logged_by_case)


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
    with ThreadPoolExecutor(8) as pool:  # each create is a round trip to the emulator
        return list(pool.map(lambda _: store.create({"redirect_url": LOCATION, "platforms": ["Android", "IPhone"]}).id,
                             range(count)))


def check_async_stack() -> None:
    """uvicorn quietly falls back to asyncio and h11 without these; the figures would not be the deployed ones."""
    missing = [name for name in ("uvloop", "httptools") if not _installed(name)]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not installed: the async functions would not run on the "
                           "stack they deploy with (functions/track/requirements.txt pins it)")


def _installed(package: str) -> bool:
    try:
        version(package)
    except PackageNotFoundError:
        return False
    return True


# --- profile ------------------------------------------------------------------------------------

_LINE_NUMBER = re.compile(r":\d+\)$")


@dataclass(frozen=True)
class Profile:
    run: Run
    samples: Path  # py-spy's raw output: one "thread (tid): name;frame;...;frame count" line per stack
    thread_cpu: dict[int, float]  # CPU seconds of each of the worker's threads during the run, from /proc


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    return {int(task.name): cpu_seconds(task / "stat") for task in Path(f"/proc/{pid}/task").iterdir()}


def cpu_seconds(stat_path: Path) -> float:
    """User plus system CPU of a process or thread, from its /proc stat file; 0 once it is gone."""
    try:
        stat = stat_path.read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile(bench: Bench, case: Case, seconds: float) -> Profile:
    """One more run of ``case`` at the summary's connection count, its server's worker sampled by py-spy.

    Run apart from the measured rounds, though py-spy reads the worker's
    memory without stopping it (``--nonblocking``): its own CPU is the bench's.
    """
    spy_path = Path(sys.executable).with_name("py-spy")
    if not spy_path.exists():
        raise RuntimeError("py-spy is not installed: pip install -r requirements-dev.txt")
    output = bench.workdir / f"profile-{case.name}.txt"
    worker = bench.servers[case.server].pids()[-1]
    spy = subprocess.Popen([str(spy_path), "record", "--pid", str(worker), "--nonblocking", "--rate", "250",
                            "--threads", "--format", "raw", "--output", str(output)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # attached
        before = thread_cpu_seconds(worker)
        run = bench.run(case, SUMMARY_CONNECTIONS, seconds, -1)
        after = thread_cpu_seconds(worker)
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its samples when interrupted
        _, errors = spy.communicate(timeout=60)
    if not output.exists():
        raise RuntimeError(f"py-spy wrote no profile: {errors.decode(errors='replace').strip()}")
    return Profile(run, output, {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()})


def print_profile(profiled: Profile, top: int = 20) -> None:
    """Where the worker's CPU went during the run, in microseconds per request.

    By thread, from the kernel's count of each thread's CPU (gRPC's completion
    queue poller runs apart from the event loop); then by function, each
    thread's CPU shared out over its py-spy samples: with what the function
    calls (frames that only pass through to one callee are left out), and on
    its own (native code shows under the Python frame that called it: the
    event loop's own work under Runner.run).
    """
    run = profiled.run
    stacks: list[tuple[int, list[str], int]] = []
    names: dict[int, str] = {}
    samples_by_thread: Counter[int] = Counter()
    for line in profiled.samples.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread = re.match(r"thread \((\d+)\)(?:: (.*))?$", stack.split(";", 1)[0])
        if not thread or not count.isdigit():
            continue
        tid = int(thread[1])
        names[tid] = thread[2] or f"thread {tid}"
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")[1:]]
        stacks.append((tid, frames, int(count)))
        samples_by_thread[tid] += int(count)
    requests = run.load.requests or 1
    us_per_sample = {tid: 1e6 * profiled.thread_cpu.get(tid, 0.0) / requests / n
                     for tid, n in samples_by_thread.items()}
    inclusive: defaultdict[str, float] = defaultdict(float)
    own: defaultdict[str, float] = defaultdict(float)
    callees: dict[str, set[str]] = {}
    for tid, frames, samples in stacks:
        weight = samples * us_per_sample[tid]
        if frames:
            own[frames[-1]] += weight
        for caller, callee in zip(frames, frames[1:], strict=False):
            callees.setdefault(caller, set()).add(callee)
        for frame in set(frames):
            inclusive[frame] += weight
    threads = {f"{names.get(tid, 'thread')} ({tid})": 1e6 * cpu / requests
               for tid, cpu in profiled.thread_cpu.items() if cpu}
    total_us = sum(threads.values())
    branching = {f: us for f, us in inclusive.items() if own.get(f) or len(callees.get(f, ())) > 1}
    print(f"profile of {run.case.name} at {run.connections} connections under py-spy: {run.load.rps:.0f} req/s, "
          f"{total_us:.0f} us of the worker's CPU per request, {sum(samples_by_thread.values())} samples "
          f"({profiled.samples})")
    for title, table in (("thread", threads), ("function, with what it calls", branching),
                         ("function, on its own", own)):
        print(f"  by {title}:")
        for name, us in sorted(table.items(), key=lambda item: -item[1])[:top]:
            print(f"    {us:6.1f} us/req  {100 * us / total_us:5.1f}%  {name}")


# --- report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """A case at one connection count over the rounds: median rate and median p99."""

    runs: list[Run]

    @property
    def rps(self) -> float:
        return statistics.median(r.load.rps for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.load.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.load.p99_ms for r in self.runs)

    @property
    def reads_per_request(self) -> float:
        return statistics.median(r.reads_per_request for r in self.runs)

    @property
    def cpu_us_per_request(self) -> float:
        return statistics.median(r.cpu_us_per_request for r in self.runs)

    @property
    def ok(self) -> int:
        return sum(r.load.ok for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.load.errors for r in self.runs)


def figures(runs: Sequence[Run]) -> dict[tuple[str, int], Figures]:
    grouped: dict[tuple[str, int], list[Run]] = {}
    for run in runs:
        if run.round >= 0:
            grouped.setdefault((run.case.name, run.connections), []).append(run)
    return {key: Figures(group) for key, group in grouped.items()}


def cold_start_ratios(cold: dict[str, list[ColdStart]], server: str, base: str) -> list[float]:
    """``server``'s cold start over ``base``'s, round by round (each round starts every server once)."""
    return [mine.redirected / theirs.redirected for mine, theirs in zip(cold[server], cold[base], strict=True)]


def paired_ratios(runs: Sequence[Run], case: str, base: str, connections: int,
                  figure: Callable[[wrk.WrkResult], float] = lambda load: load.rps) -> list[float]:
    """Each round's case/base figure (rate by default): the two ran in the same round, so a change in the
    machine's load cancels out."""
    values = {(r.case.name, r.round): figure(r.load) for r in runs if r.connections == connections and r.round >= 0}
    rounds = sorted({r.round for r in runs if r.round >= 0})
    return [values[(case, n)] / values[(base, n)] for n in rounds if values.get((base, n))]


def print_table(table: dict[tuple[str, int], Figures], connections: Sequence[int]) -> None:
    print(f"{'case':<10} {'conns':>5} {'req/s':>8} {'/flask':>6} {'/aio':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'reads/req':>9} {'cpu us/req':>10} {'ok':>8} {'errors':>6}")
    for conns in connections:
        flask, aio = table[("bare_flask", conns)].rps, table[("bare_aio", conns)].rps
        for case in CASES:
            if (case.name, conns) not in table:
                continue
            f = table[(case.name, conns)]
            reads = f"{f.reads_per_request:.3f}" if case.track else "-"
            print(f"{case.name:<10} {conns:>5} {f.rps:>8.0f} {f.rps / flask:>6.2f} {f.rps / aio:>6.2f} "
                  f"{f.p50_ms:>8.2f} {f.p99_ms:>8.2f} {reads:>9} {f.cpu_us_per_request:>10.0f} {f.ok:>8} "
                  f"{f.errors:>6}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4,
                        help="wrk duration of each case, whole seconds as wrk takes them (default 4)")
    parser.add_argument("--connections", default="1,16,64", help="connection counts (default 1,16,64)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every case; medians are shown (default 3)")
    parser.add_argument("--campaigns", type=int, default=64, help="campaigns the clicks spread over")
    parser.add_argument("--stall-seconds", type=float, default=2.0,
                        help="how long the stall case pauses Pub/Sub, from its first second (default 2)")
    parser.add_argument("--profile", default="", metavar="CASE[,CASE...]",
                        help="at the end, run each CASE once more under py-spy and print where the server's CPU went")
    args = parser.parse_args(argv)
    args.connection_counts = [int(c) for c in args.connections.split(",")]
    profilable = {c.name: c for c in CASES if not c.stall}
    args.profiled_cases = [profilable[name] for name in args.profile.split(",") if name in profilable]
    if len(args.profiled_cases) != len([name for name in args.profile.split(",") if name]):
        parser.error(f"--profile takes cases among {', '.join(profilable)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if SUMMARY_CONNECTIONS not in args.connection_counts:
        parser.error(f"--connections must include {SUMMARY_CONNECTIONS}: the summary line compares there")
    if args.seconds < STALL_STARTS_AFTER_S + args.stall_seconds + 1:
        parser.error("--seconds must leave the stall case a second after the stall")
    return args


def print_settings(args: argparse.Namespace, specs: Sequence[ServerSpec]) -> None:
    load1, load5, _ = os.getloadavg()
    track = next(s for s in specs if s.name == "track")
    print("hotpath settings:")
    print(f"  servers: functions-framework {version('functions-framework')} --source ... --target ..., one worker "
          f"each; Flask functions on gunicorn gthread THREADS={FLASK_THREADS}; async ones on uvicorn "
          f"{version('uvicorn')} uvloop {version('uvloop')} httptools {version('httptools')}")
    print(f"  track: staged by ./deploy.sh --dry-run ({track.deploy_flags}), its environment: "
          + " ".join(f"{k}={v}" for k, v in track.env.items() if k != config.PROJECT))
    print(f"  hit: CACHE_TTL_SECONDS={HIT_TTL_SECONDS}; miss: CACHE_TTL_SECONDS={MISS_TTL_SECONDS} (every entry "
          f"expired on its next click; concurrent misses on one id still share one read); "
          f"{args.campaigns} campaigns, ids picked at random")
    print(f"  stall: at {SUMMARY_CONNECTIONS} connections, Pub/Sub paused (SIGSTOP) from {STALL_STARTS_AFTER_S:g}s "
          f"for {args.stall_seconds:g}s of the {args.seconds:g}s run")
    print("  naive: pubsub_v1.PublisherClient() with default batch settings, result() per request")
    print(f"  load: wrk, {args.seconds:g}s per case, connections {args.connections}, threads min(conns, 2), "
          f"{args.rounds} rounds (median), cases interleaved in each round, timeout {WRK_TIMEOUT_S:g}s")
    print(f"  machine: {os.cpu_count()} CPUs, load average {load1:.2f} / {load5:.2f} before start (emulators, "
          "wrk, the servers and the Firestore call counter share them)")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    check_async_stack()
    workdir = Path(tempfile.mkdtemp(prefix="o7tracker-hotpath-"))
    with emulators.running(log_dir=workdir) as emulator_env:
        os.environ.update(emulator_env)
        os.environ.setdefault(config.CAMPAIGN_ID_KEY, secrets.token_urlsafe(32))
        project = emulator_env[config.PROJECT]
        base_env = {**os.environ, **emulator_env}
        specs = server_specs(project, workdir)
        print_settings(args, specs)
        for spec in specs:
            if spec.topic:
                emulators.create_topic_and_subscription(project, spec.topic, spec.topic + "-sub")
        campaign_ids = create_campaigns(args.campaigns)
        probe = f"/track/{campaign_ids[0]}?platform=Android"
        pubsub_port = int(emulator_env["PUBSUB_EMULATOR_HOST"].rsplit(":", 1)[1])
        cold = cold_starts(cold_start_specs(specs), base_env, probe, workdir, args.rounds)
        with started_servers(specs, base_env, probe, workdir) as servers:
            bench = Bench(servers, campaign_ids, workdir, pubsub_port, args.stall_seconds, project)
            for case in CASES:
                if not case.stall:
                    bench.warm_up(case)
            for conns in args.connection_counts:
                for round_ in range(args.rounds):
                    for case in CASES:
                        if case.stall and conns != SUMMARY_CONNECTIONS:
                            continue
                        result = bench.run(case, conns, args.seconds, round_)
                        print(f"  {case.name:<10} c={conns:<3} {result.load.rps:>7.0f} req/s  "
                              f"p99 {result.load.p99_ms:.1f} ms", flush=True)
            profiles = [profile(bench, case, args.seconds) for case in args.profiled_cases]
            rss = {name: server.rss_mib() for name, server in servers.items()}
            accounting = bench.settle()
        for profiled in profiles:
            print()
            print_profile(profiled)
        return report(args, bench, rss, accounting, cold)


def report(
    args: argparse.Namespace, bench: Bench, rss: dict[str, float], accounting: Accounting,
    cold: dict[str, list[ColdStart]],
) -> int:
    table = figures(bench.runs)
    servers = bench.servers
    print()
    print_table(table, args.connection_counts)
    print("(medians over the rounds; /flask, /aio: rate against bare_flask, bare_aio; reads/req: Firestore "
          "calls per request, counted on the wire; cpu us/req: the server processes' own CPU per request)")
    print()
    a = accounting
    print(f"clicks on the track servers: {a.answered} answered to wrk, {a.traced} traced to their runs "
          f"({a.published} published, {a.logged} in the replay log, both counted once), lost {a.lost}; "
          f"unconfirmed (in the replay log) by case: "
          f"{', '.join(f'{case} {n}' for case, n in a.logged_by_case.items()) or 'none'}")
    cold_ratios = {(server, base): cold_start_ratios(cold, server, base)
                   for server, base in (("track", "bare_aio"), ("clients_aio", "bare_aio"), ("track", "clients_aio"))}
    cold_ratio = statistics.median(cold_ratios[("track", "bare_aio")])
    print(f"cold start, process start to first redirect (listening), median of {args.rounds} started in turns: "
          + ", ".join(f"{name} {statistics.median(c.redirected for c in starts):.2f}s "
                      f"({statistics.median(c.listening for c in starts):.2f}s)" for name, starts in cold.items()))
    print("cold start ratios, median (round by round): " + "; ".join(
        f"{server}/{base} {statistics.median(values):.2f}x ({', '.join(f'{r:.2f}' for r in values)})"
        for (server, base), values in cold_ratios.items()))
    floor = statistics.median(cold_ratios[("clients_aio", "bare_aio")])
    # The bound is against the floor any function using the official clients has: clients_aio.
    cold_vs_floor = statistics.median(cold_ratios[("track", "clients_aio")])
    print("worker RSS after the load: " + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in rss.items()))
    unknown = table[("unknown", SUMMARY_CONNECTIONS)]
    print(f"unknown ids: {unknown.reads_per_request:.3f} Firestore reads per request at {SUMMARY_CONNECTIONS} "
          "connections")
    ratios = {base: paired_ratios(bench.runs, "hit", base, SUMMARY_CONNECTIONS) for base in ("bare_flask", "bare_aio")}
    for base, values in ratios.items():
        print(f"hit/{base} at {SUMMARY_CONNECTIONS} connections, round by round: "
              f"{', '.join(f'{v:.2f}' for v in values)}")
    p99_ratios = paired_ratios(bench.runs, "hit", "bare_aio", SUMMARY_CONNECTIONS, lambda load: load.p99_ms)
    print(f"p99 hit/bare_aio at {SUMMARY_CONNECTIONS} connections, round by round: "
          f"{', '.join(f'{v:.2f}' for v in p99_ratios)}")
    flask, aio = table[("bare_flask", SUMMARY_CONNECTIONS)], table[("bare_aio", SUMMARY_CONNECTIONS)]
    track, stall = table[("hit", SUMMARY_CONNECTIONS)], table[("stall", SUMMARY_CONNECTIONS)]
    ratio_flask, ratio_aio = statistics.median(ratios["bare_flask"]), statistics.median(ratios["bare_aio"])
    wait_ms = 1000 * config.Settings.from_env(servers["track"].spec.env).publish_wait_seconds
    targets = [
        (f"ratio_flask {ratio_flask:.2f} >= 2.5", ratio_flask >= 2.5),
        (f"ratio_aio {ratio_aio:.2f} >= 0.50", ratio_aio >= 0.5),
        (f"p99_track {track.p99_ms:.1f} <= 2 x p99_bare_aio {aio.p99_ms:.1f}", track.p99_ms <= 2 * aio.p99_ms),
        (f"stalled_p99 {stall.p99_ms:.1f} <= {wait_ms + 100:.0f} ms", stall.p99_ms <= wait_ms + 100),
        (f"lost {a.lost} = 0", a.lost == 0),
        (f"cold start track/clients_aio {cold_vs_floor:.2f} <= 1.25 (track/bare_aio {cold_ratio:.1f}; importing "
         f"the official clients alone: {floor:.1f})", cold_vs_floor <= 1.25),
    ]
    print("targets: " + "; ".join(f"{text} {'met' if ok else 'MISSED'}" for text, ok in targets))
    load1, load5, _ = os.getloadavg()
    print(f"machine load average at the end: {load1:.2f} / {load5:.2f}")
    print(f"hotpath: bare_flask_rps={flask.rps:.0f} bare_aio_rps={aio.rps:.0f} track_rps={track.rps:.0f} "
          f"ratio_flask={ratio_flask:.2f} ratio_aio={ratio_aio:.2f} p99_bare_aio_ms={aio.p99_ms:.1f} "
          f"p99_track_ms={track.p99_ms:.1f} stalled_p99_ms={stall.p99_ms:.1f} lost={a.lost} "
          f"cold_vs_floor={cold_vs_floor:.2f}")
    return 1 if a.lost else 0


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
