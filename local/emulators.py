"""Start and stop the official Firestore and Pub/Sub emulators.

Each emulator is a JVM under gcloud's wrapper scripts, so each is started in
a session of its own and stopped by process group; killing only the wrapper
would orphan the JVM, which keeps its port. Every such session is also listed
with this process's watchdog (:mod:`local.watchdog`), which stops it should
this process end without doing so, SIGKILL included.

``python -m local.emulators -- CMD ...`` runs CMD with both emulators up on
free ports and the client variables set, then stops them: the test command.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from local.watchdog import living

DEFAULT_PROJECT = "demo-o7tracker"
INSTALL_HINT = """\
The Google Cloud emulators are needed (Google Cloud CLI with its emulator components, and Java 17+).
Install them with
    gcloud components install cloud-firestore-emulator pubsub-emulator beta
or, where gcloud came from Debian packages,
    sudo apt-get install google-cloud-cli-firestore-emulator google-cloud-cli-pubsub-emulator"""
READY_TIMEOUT_SECONDS = 60.0


class EmulatorError(RuntimeError):
    pass


@dataclass
class Emulator:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process_group(self.process)


# Ports for the emulators and servers started here are drawn from here up to the ephemeral range.
_LISTEN_PORTS_FROM = 20000


def free_port() -> int:
    """A port free now, below the range the kernel draws outgoing connections' ports from.

    A port the kernel hands out for ``bind(0)`` comes from that range, so by the time an
    emulator binds it seconds later, some client's connection may have taken it as its own
    source port; ports below the range are only ever taken by a listener asking for them.
    """
    low = _ephemeral_range_start()
    for port in random.sample(range(_LISTEN_PORTS_FROM, low), min(200, low - _LISTEN_PORTS_FROM)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # every probed port busy: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_range_start() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return max(low, _LISTEN_PORTS_FROM + 1000)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _Watchdog:
    """This process's watchdog, started with its first session: told each session's process group
    over a pipe whose write end no other process holds (it is not inherited across exec)."""

    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(Path(__file__).with_name("watchdog.py")), str(read_end)],
                pass_fds=(read_end,), stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(read_end)

    def tell(self, change: str, group: int) -> None:
        # If the watchdog was killed, sessions are still stopped here, only no longer after a crash.
        with suppress(BrokenPipeError):
            os.write(self._write_end, f"{change}{group}\n".encode())  # below PIPE_BUF: never interleaved


_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()


def start_session(
    command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
    log: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """``command`` in a session of its own, its output to ``log`` (else this process's), to be stopped
    with :func:`stop_process_group`; should this process end first, its watchdog stops it.

    A session of its own keeps a Ctrl-C in this terminal from reaching it before this process
    has stopped what depends on it.
    """
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None:
            _watchdog = _Watchdog()
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT if log else None, start_new_session=True)
        _watchdog.tell("+", process.pid)
    return process


def stop_process_group(process: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """Stop a process started in a session of its own (:func:`start_session`) and everything it spawned."""
    try:
        _stop_group(process, grace_seconds)
    finally:
        if _watchdog is not None:
            _watchdog.tell("-", process.pid)


def _stop_group(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            # The wrapper may exit before its JVM; wait for the group to be gone. What is left of
            # it as zombies (a server's worker, orphaned by its arbiter) is init's to reap, which
            # some inits do only every few seconds: a zombie holds nothing, so it is not waited for.
            deadline = time.monotonic() + wait
            while living({process.pid}) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not living({process.pid}):
                return
        except subprocess.TimeoutExpired:
            continue


def listening_pid(port: int) -> int:
    """The process listening on a local TCP port, found through /proc (Linux)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(FileNotFoundError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    sockets.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with suppress(OSError):  # gone meanwhile, or not ours to look into
            if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                return int(proc.name)
    raise EmulatorError(f"no process of ours listens on port {port}")


# What the project's own scripts run as, to name the script that holds a port: run.sh and test.sh
# exec these modules, and bench.sh a bench module.
_SCRIPTS = (("local.stack", "./run.sh"), ("local.emulators", "./test.sh"), ("bench.", "./bench.sh"))


@dataclass(frozen=True)
class PortHolder:
    """The process listening on a port, and the script of this project it belongs to, if any."""

    pid: int
    command: str
    script: tuple[str, int] | None  # ("./run.sh", its pid)

    def describe(self) -> str:
        command = self.command if len(self.command) <= 160 else self.command[:157] + "..."
        part_of = f" (part of {self.script[0]}, pid {self.script[1]})" if self.script else ""
        return f"held by pid {self.pid}: {command or '(command line unknown)'}{part_of}"

    def how_to_stop(self) -> str:
        if self.script and self.script[0] == "./run.sh":
            return f"stop that ./run.sh with Ctrl-C in its terminal, or: kill -INT {self.script[1]}"
        if self.script:
            return f"let that {self.script[0]} finish, or stop it with: kill -INT {self.script[1]}"
        return f"stop it with: kill {self.pid}"


def unseen_holder(port: int) -> str:
    return (f"by a process not visible from here (another user's, or outside this container); "
            f"sudo ss -ltnp 'sport = :{port}' may name it")


def port_holder(port: int) -> PortHolder | None:
    """Who listens on a local TCP port: /proc, else ``ss -ltnp``, else ``lsof``; None when unseen."""
    pid: int | None
    try:
        pid = listening_pid(port)
    except EmulatorError:
        pid = _tool_pid(["ss", "-Hltnp", f"sport = :{port}"], r"pid=(\d+)") or _tool_pid(
            ["lsof", "-t", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN"], r"^(\d+)$")
    if pid is None:
        return None
    return PortHolder(pid, _command_line(pid), _script_of(pid))


def _tool_pid(command: list[str], pattern: str) -> int | None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(pattern, out, re.MULTILINE)
    return int(found.group(1)) if found else None


def _command_line(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        return shlex.join(arg.decode(errors="replace") for arg in args) if args != [b""] else ""
    except OSError:
        pass
    try:
        return subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _script_of(pid: int) -> tuple[str, int] | None:
    """The project script (run.sh, test.sh, bench.sh) that ``pid`` is, or was started by."""
    for _ in range(16):  # the emulators' JVMs sit under gcloud's wrapper, under the script
        command = _command_line(pid)
        for module, script in _SCRIPTS:
            if f"-m {module}" in command:
                return script, pid
        try:
            pid = int(_stat_fields(Path(f"/proc/{pid}/stat"))[1])
        except (OSError, IndexError, ValueError):
            return None
        if pid <= 1:
            return None
    return None


@contextmanager
def paused(port: int) -> Iterator[None]:
    """The emulator serving ``port`` stalled for the block: its process group stopped with SIGSTOP.

    A stalled dependency as production sees one: connections open and requests
    accepted by the kernel, but no answer until SIGCONT.
    """
    group = os.getpgid(listening_pid(port))
    if group == os.getpgrp():
        raise EmulatorError(f"port {port} is served from this process group; refusing to stop it")
    os.killpg(group, signal.SIGSTOP)
    try:
        # A thread running at the signal stops a little later and may answer meanwhile.
        deadline = time.monotonic() + 5
        while not all(state == "T" for state in _thread_states(group)):
            if time.monotonic() > deadline:
                raise EmulatorError(f"the emulator on port {port} did not stop")
            time.sleep(0.01)
        yield
    finally:
        os.killpg(group, signal.SIGCONT)


def _thread_states(group: int) -> list[str]:
    """The state letter (as ps shows it) of every thread of every process in a process group."""
    states = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with suppress(OSError, IndexError):  # gone meanwhile
            if int(_stat_fields(proc / "stat")[2]) == group:
                states += [_stat_fields(task / "stat")[0] for task in (proc / "task").iterdir()]
    return states


def _stat_fields(path: Path) -> list[str]:
    """A /proc stat file's fields after the command name: state, ppid, pgrp, ..."""
    return path.read_text().rsplit(")", 1)[1].split()


def _command(name: str, port: int, project: str) -> list[str]:
    host_port = f"--host-port=127.0.0.1:{port}"
    if name == "firestore":
        return ["gcloud", "emulators", "firestore", "start", host_port, f"--project={project}"]
    return ["gcloud", "beta", "emulators", "pubsub", "start", host_port, f"--project={project}"]


def launch(name: str, port: int, project: str, log_dir: Path) -> Emulator:
    for tool in ("gcloud", "java"):
        if shutil.which(tool) is None:
            raise EmulatorError(f"'{tool}' is not on PATH.\n{INSTALL_HINT}")
    if port_in_use(port):
        holder = port_holder(port)
        found = f"{holder.describe()}; {holder.how_to_stop()}" if holder else unseen_holder(port)
        raise EmulatorError(f"port {port} for the {name} emulator is already in use, {found}")
    log_path = log_dir / f"{name}-emulator.log"
    with log_path.open("wb") as log:
        process = start_session(_command(name, port, project), log=log)
    return Emulator(name, port, process, log_path)


def wait_ready(emulator: Emulator, timeout: float = READY_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            tail = emulator.log_path.read_text(errors="replace")[-2000:]
            raise EmulatorError(f"the {emulator.name} emulator exited at start:\n{tail}\n{INSTALL_HINT}")
        try:
            with urllib.request.urlopen(f"http://{emulator.host}/", timeout=1) as answer:
                if answer.read().strip() == b"Ok":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    emulator.stop()
    raise EmulatorError(f"the {emulator.name} emulator did not answer within {timeout:.0f}s; see {emulator.log_path}")


@contextmanager
def running(
    firestore_port: int | None = None,
    pubsub_port: int | None = None,
    project: str = DEFAULT_PROJECT,
    log_dir: Path | None = None,
) -> Iterator[dict[str, str]]:
    """Both emulators, started side by side; yields the environment the clients need."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="o7tracker-emulators-"))
    with ExitStack() as stack:
        emulators = []
        for name, port in (("firestore", firestore_port), ("pubsub", pubsub_port)):
            emulator = launch(name, port or free_port(), project, log_dir)
            stack.callback(emulator.stop)
            emulators.append(emulator)
        for emulator in emulators:
            wait_ready(emulator)
        warm_firestore(emulators[0].host, project)
        yield {
            "FIRESTORE_EMULATOR_HOST": emulators[0].host,
            "PUBSUB_EMULATOR_HOST": emulators[1].host,
            "GOOGLE_CLOUD_PROJECT": project,
        }


def create_topic_and_subscription(
    project: str, topic: str, subscription: str, ack_deadline_seconds: int = 60
) -> None:
    """The click topic and the drain's pull subscription, as deploy.sh creates them."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    with suppress(gexc.AlreadyExists):
        publisher.create_topic(name=topic_path)
    try:
        subscriber.create_subscription(
            name=subscriber.subscription_path(project, subscription), topic=topic_path,
            ack_deadline_seconds=ack_deadline_seconds,
        )
    except gexc.AlreadyExists:
        pass
    finally:
        subscriber.close()


def warm_firestore(host: str, project: str, timeout: float = READY_TIMEOUT_SECONDS) -> None:
    """Read one (missing) document, so the emulator sets up the project's database now.

    Its first request takes seconds on a busy machine; a function's cold start,
    whose Firestore check has a deadline, must not be the one to pay it.
    """
    url = f"http://{host}/v1/projects/{project}/databases/(default)/documents/meta/warm-up"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise


def wipe_firestore(host: str, project: str) -> None:
    """Delete every document in the emulator's default database."""
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10):
        pass


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m local.emulators -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        with running() as env:
            print(f"emulators up: firestore {env['FIRESTORE_EMULATOR_HOST']}, "
                  f"pubsub {env['PUBSUB_EMULATOR_HOST']}", file=sys.stderr)
            command = subprocess.Popen(argv, env={**os.environ, **env})
            try:
                return command.wait()
            except KeyboardInterrupt:
                command.send_signal(signal.SIGINT)
                return command.wait()
    except EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
