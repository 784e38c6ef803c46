"""Stopping what local.emulators started: a process group, whoever is left in it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from local import emulators

# The group's leader forks a keeper into a group of its own, which forks a member of the leader's group
# that exits at once and, its parent living on elsewhere, stays a zombie: as a server's worker does,
# orphaned by its arbiter, until init reaps it (which some inits do only every few seconds).
LEAVES_A_ZOMBIE = """
import os, time
group = os.getpgrp()
if os.fork() == 0:
    os.setpgid(0, 0)
    if os.fork() == 0:
        os.setpgid(0, group)
        os._exit(0)
    print(os.getpid(), flush=True)
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


def states_in_group(group: int) -> list[str]:
    states = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == group:
            states.append(state)
    return states


def started_until_a_zombie(script: str, output: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A session running ``script``, once the number it prints is out and its group shows a zombie."""
    with output.open("wb") as log:
        leader = emulators.start_session([sys.executable, "-c", script], log=log)
    while not output.read_text() or "Z" not in states_in_group(leader.pid):
        time.sleep(0.01)
    return leader, int(output.read_text())


def test_a_stop_does_not_wait_for_the_groups_zombies(tmp_path: Path) -> None:
    leader, keeper = started_until_a_zombie(LEAVES_A_ZOMBIE, tmp_path / "keeper")
    try:
        began = time.monotonic()
        emulators.stop_process_group(leader, grace_seconds=5.0)
        assert leader.returncode is not None and time.monotonic() - began < 2.0
        assert states_in_group(leader.pid) == ["Z"]  # still there: held by the keeper, not waited for
    finally:
        os.killpg(keeper, signal.SIGKILL)


# A member whose main thread has ended while another thread holds its port shows "Z" as a
# zombie does; it ignores SIGTERM, as a slow shutdown would. Its leader, a wrapper as gcloud's
# is, ends on SIGTERM at once.
HOLDS_A_PORT_AFTER_ITS_MAIN_THREAD = """
import ctypes, signal, socket, sys, threading, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
threading.Thread(target=lambda: time.sleep(3600)).start()
ctypes.CDLL(None).pthread_exit(None)
"""
WRAPPER = ("import subprocess, sys, time; "
           f"subprocess.Popen([sys.executable, '-c', {HOLDS_A_PORT_AFTER_ITS_MAIN_THREAD!r}]); time.sleep(60)")


def test_a_stop_waits_for_a_member_whose_main_thread_ended_while_its_others_run(tmp_path: Path) -> None:
    leader, port = started_until_a_zombie(WRAPPER, tmp_path / "port")
    assert emulators.port_in_use(port)
    emulators.stop_process_group(leader, grace_seconds=1.0)
    assert not emulators.port_in_use(port)  # killed, not passed over as a zombie
