"""Stops what a process started once that process is gone, however it ended: SIGKILL included.

:func:`local.emulators.start_session` starts each emulator and server in a session
of its own, where the signals sent to its starter's process group do not reach
it, and tells this watchdog its process group (``+GROUP``, and ``-GROUP`` once
stopped) over a pipe whose write end only the starter holds. The kernel closes
that end when the starter exits, whatever ended it; the read here then returns,
and every group still listed is stopped: SIGTERM, then SIGKILL for what is left
after a grace period. A parent-death signal would not do: it reaches only the
direct child, not the JVM that gcloud's wrapper forks, and it fires when the
thread that forked ends rather than the process.

Run as ``python -I -S local/watchdog.py FD``: standard library only and no site
packages, so that it starts in milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.05


def listed_groups(lines: Iterable[bytes]) -> set[int]:
    """The groups listed and not yet withdrawn when the starter closed its end."""
    groups: set[int] = set()
    for line in lines:
        group = int(line[1:])
        if line.startswith(b"+"):
            groups.add(group)
        else:
            groups.discard(group)
    return groups


def living(groups: set[int]) -> set[int]:
    """The groups that still have a process that is not a zombie (a zombie holds no port or memory).

    A process whose main thread has ended shows as a zombie too while its other threads run and hold
    its sockets: only a zombie with no thread left is passed over."""
    proc = Path("/proc")
    if not proc.is_dir():  # no /proc: ask the kernel, zombies included
        return {group for group in groups if _signal(group, 0)}
    found = set()
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                state, _, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue  # gone meanwhile
            if int(group) in groups and (state != "Z" or _threads(entry) > 1):
                found.add(int(group))
    return found


def _threads(process: Path) -> int:
    try:
        return sum(1 for _ in (process / "task").iterdir())
    except OSError:
        return 0  # gone meanwhile


def stop(groups: set[int], grace_seconds: float = GRACE_SECONDS) -> None:
    for group in groups:
        _signal(group, signal.SIGTERM)
        _signal(group, signal.SIGCONT)  # a stopped group (the hotpath bench's stalled Pub/Sub) acts on it only then
    deadline = time.monotonic() + grace_seconds
    while living(groups) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    for group in living(groups):
        _signal(group, signal.SIGKILL)


def _signal(group: int, sig: int) -> bool:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):  # gone, its number now another user's
        return False
    return True


def main(argv: list[str]) -> int:
    with open(int(argv[0]), "rb") as starter:
        groups = listed_groups(starter)
    stop(groups)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
