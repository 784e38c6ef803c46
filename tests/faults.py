"""Real faults for tests: a private emulator that can be paused, and an address nobody answers.

A paused emulator is a stalled dependency as production sees one: its port
accepts connections, but nothing answers. Each private emulator is a JVM of
its own (started through :mod:`local.emulators`), so pausing it never stalls
the emulators the rest of the suite shares.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from local import emulators


class PausableEmulator:
    def __init__(self, emulator: emulators.Emulator) -> None:
        self.emulator = emulator
        self.is_paused = False

    @property
    def host(self) -> str:
        return self.emulator.host

    def pause(self) -> None:
        """SIGSTOP the emulator's whole process group (gcloud's wrapper and its JVM), and wait until it has stopped.

        A thread running at that moment stops a little later, and may answer a
        request meanwhile; so this returns only once every thread is stopped.
        """
        pgid = self.emulator.process.pid
        os.killpg(pgid, signal.SIGSTOP)
        self.is_paused = True
        deadline = time.monotonic() + 5
        while not all(state == "T" for state in _thread_states(pgid)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.emulator.name} emulator did not stop")
            time.sleep(0.01)

    def resume(self) -> None:
        os.killpg(self.emulator.process.pid, signal.SIGCONT)
        self.is_paused = False

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()


@contextmanager
def private_emulators(project: str, *names: str) -> Iterator[dict[str, PausableEmulator]]:
    """Fresh ``firestore`` and/or ``pubsub`` emulators on free ports, started side by side.

    Always resumed and stopped afterwards, whatever the test did to them.
    """
    log_dir = Path(tempfile.mkdtemp(prefix="o7tracker-private-emulators-"))
    with ExitStack() as stack:
        started = {}
        for name in names:
            pausable = PausableEmulator(emulators.launch(name, emulators.free_port(), project, log_dir))
            stack.callback(_stop, pausable)
            started[name] = pausable
        for pausable in started.values():
            emulators.wait_ready(pausable.emulator)
        yield started


def _stop(pausable: PausableEmulator) -> None:
    if pausable.is_paused:
        pausable.resume()  # a stopped process does not act on SIGTERM until it runs again
    pausable.emulator.stop()


def _stat_fields(path: str) -> list[str]:
    """A /proc stat file's fields after the command name: state, ppid, pgrp, ..."""
    with open(path) as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _thread_states(pgid: int) -> list[str]:
    """The state letter (ps's STAT) of every thread of every process in a process group."""
    states = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(_stat_fields(f"/proc/{pid}/stat")[2]) != pgid:
                continue
            states += [_stat_fields(f"/proc/{pid}/task/{tid}/stat")[0] for tid in os.listdir(f"/proc/{pid}/task")]
        except (OSError, IndexError):
            continue  # gone meanwhile
    return states


def unreachable_host() -> str:
    """host:port where nothing listens: connections are refused at once."""
    return f"127.0.0.1:{emulators.free_port()}"
