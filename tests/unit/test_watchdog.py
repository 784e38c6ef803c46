import subprocess
import sys
import time

from local.watchdog import listed_groups, living, stop


def test_a_group_withdrawn_once_stopped_is_left_alone() -> None:
    assert listed_groups([b"+101\n", b"+202\n", b"-101\n", b"+303\n"]) == {202, 303}


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert process.stdout is not None and process.stdout.readline()  # its handler is in place
        began = time.monotonic()
        stop({process.pid}, grace_seconds=1.0)
        assert process.wait(timeout=10) == -9
        assert time.monotonic() - began >= 1.0  # SIGTERM first, SIGKILL only after the grace period
        assert living({process.pid}) == set()
    finally:
        process.kill()
        process.wait()
