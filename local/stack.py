"""``./run.sh``: the whole tracker on this machine, in the foreground until Ctrl-C.

Starts the Firestore and Pub/Sub emulators, creates the click topic and
subscription, and serves the three functions behind :mod:`local.gateway` on
``PORT``. On Ctrl-C (or SIGTERM) it stops everything it started.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from google.cloud import firestore

from local import emulators
from shared import config
from shared.legacy_ids import save_registry

ROOT = Path(__file__).resolve().parent.parent
DEAD_LETTER_TOPIC = "o7-clicks-dead-letter"  # as deploy.sh names it


class Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def wait_serving(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the server answers any HTTP request (its redirect is not followed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise emulators.EmulatorError(f"the function server exited with status {process.returncode}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("HEAD", "/")
            connection.getresponse()
            return
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    raise emulators.EmulatorError(f"the function server did not answer on port {port} within {timeout:.0f}s")


def main() -> int:
    port = int(os.environ.get("PORT", "8080"))
    firestore_port = int(os.environ.get("FIRESTORE_PORT", port + 1))
    pubsub_port = int(os.environ.get("PUBSUB_PORT", port + 2))
    busy = [p for p in (port, firestore_port, pubsub_port) if emulators.port_in_use(p)]
    if busy:
        print(f"error: port(s) {', '.join(map(str, busy))} already in use; is o7tracker already running? "
              "Stop it, or choose other ports with PORT, FIRESTORE_PORT and PUBSUB_PORT.", file=sys.stderr)
        return 1
    project = os.environ.get(config.PROJECT) or emulators.DEFAULT_PROJECT
    settings = config.Settings.from_env({**os.environ, config.PROJECT: project})
    # The emulators start empty on every run, so a key of the run's own loses no campaign.
    env = {**os.environ, config.PROJECT: project, config.AUTH_USER: settings.auth_user,
           config.AUTH_PASSWORD: settings.auth_password or "admin",
           config.CAMPAIGN_ID_KEY: settings.campaign_id_key or secrets.token_urlsafe(32)}
    if not settings.auth_password:
        print("note: AUTH_PASSWORD not set; the local admin API uses admin/admin", file=sys.stderr)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server: subprocess.Popen[bytes] | None = None
    try:
        with emulators.running(firestore_port, pubsub_port, project) as emulator_env:
            env.update(emulator_env)
            os.environ.update(emulator_env)
            emulators.create_topic_and_subscription(project, settings.clicks_topic, settings.clicks_subscription)
            # Where deploy.sh's subscription sends what it cannot deliver; the emulator never does,
            # but the scheduled run counts what waits there all the same.
            emulators.create_topic_and_subscription(project, DEAD_LETTER_TOPIC, settings.dead_letter_subscription)
            # An empty database holds no id from before ids were keyed: an empty
            # registry makes the track function check every id, as deployed.
            save_registry(firestore.Client(project=project), [])
            server = subprocess.Popen(
                # One worker, on the track function's stack: uvicorn with uvloop and httptools.
                [sys.executable, "-m", "uvicorn", "--factory", "local.gateway:create_gateway",
                 "--host", os.environ.get("HOST", "127.0.0.1"), "--port", str(port), "--workers", "1",
                 "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
                 "--app-dir", str(ROOT)],
                env=env, start_new_session=True,
            )
            wait_serving(port, server)
            print(f"o7tracker running on http://127.0.0.1:{port}  (track: /track/<id>?platform=Android, "
                  f"admin: /admin/campaigns, drain: /tasks/update_stats); Ctrl-C stops it", file=sys.stderr)
            server.wait()
            print("error: the function server exited", file=sys.stderr)
            return 1
    except Stop as stop:
        print(f"{stop}: stopping o7tracker", file=sys.stderr)
        return 0
    except emulators.EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish cleaning up on a second Ctrl-C
        if server is not None:
            emulators.stop_process_group(server)


if __name__ == "__main__":
    sys.exit(main())
