"""``./run.sh``: the whole tracker on this machine, in the foreground until Ctrl-C.

Starts the Firestore and Pub/Sub emulators, creates the click topic and
subscription, and serves the three functions behind :mod:`local.gateway` on
``PORT``. On Ctrl-C (or SIGTERM) it stops everything it started; killed by any
other signal, SIGKILL included, its watchdog (:mod:`local.watchdog`) does.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType

from google.cloud import firestore

from local import emulators
from shared import config
from shared.legacy_ids import save_registry
from shared.models import check_track_base_url
from shared.partitions import subscription_of
from shared.visitors import SaltKeeper

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


class BadSetting(Exception):
    """A setting of ./run.sh that it cannot start with; the message names the variable."""


def port_setting(name: str, default: int, default_source: str) -> int:
    """The port in the variable ``name``, else ``default`` (``default_source`` says how it was derived)."""
    raw = os.environ.get(name, "")
    if raw == "":
        if not 1 <= default <= 65535:
            raise BadSetting(f"{name} would be {default_source} = {default}, which is not a port (1 to 65535); "
                             f"set {name}")
        return default
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 65535):
        raise BadSetting(f"{name}={raw[:64]!r} is not a port number (1 to 65535)")
    return int(raw)


def read_ports() -> dict[str, int]:
    port = port_setting("PORT", 8080, "the default")
    ports = {"PORT": port, "FIRESTORE_PORT": port_setting("FIRESTORE_PORT", port + 1, "PORT+1"),
             "PUBSUB_PORT": port_setting("PUBSUB_PORT", port + 2, "PORT+2")}
    if len(set(ports.values())) < len(ports):
        given = ", ".join(f"{name}={value}" for name, value in ports.items())
        raise BadSetting(f"PORT, FIRESTORE_PORT and PUBSUB_PORT must be three different ports, got {given}")
    return ports


def read_host() -> str:
    host = os.environ.get("HOST") or "127.0.0.1"
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise BadSetting(f"HOST={host[:64]!r} is not an address to serve on ({exc})") from None
    return host


def busy_ports_report(busy: dict[str, int]) -> str:
    """Each taken port, who holds it and how to stop that; then the way around it."""
    lines, advice = [], []
    for name, port in busy.items():
        holder = emulators.port_holder(port)
        found = holder.describe() if holder else emulators.unseen_holder(port)
        lines.append(f"error: port {port} ({name}) is already in use, {found}")
        if holder and holder.how_to_stop() not in advice:
            advice.append(holder.how_to_stop())
    advice.append("or choose other ports with PORT, FIRESTORE_PORT and PUBSUB_PORT")
    return "\n".join(lines + [f"  {line}" for line in advice])


def main() -> int:
    try:
        ports, host = read_ports(), read_host()
        project = os.environ.get(config.PROJECT) or emulators.DEFAULT_PROJECT
        settings = config.Settings.from_env({**os.environ, config.PROJECT: project})
        check_track_base_url(settings.track_base_url)  # as the admin function will at its start
    except (BadSetting, config.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    port, firestore_port, pubsub_port = ports["PORT"], ports["FIRESTORE_PORT"], ports["PUBSUB_PORT"]
    busy = {name: p for name, p in ports.items() if emulators.port_in_use(p)}
    if busy:
        print(busy_ports_report(busy), file=sys.stderr)
        return 1
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
            for partition in range(settings.aggregate_partitions):
                emulators.create_topic_and_subscription(
                    project, settings.clicks_topic, subscription_of(settings.clicks_subscription, partition))
            # Where deploy.sh's subscription sends what it cannot deliver; the emulator never does,
            # but the scheduled run counts what waits there all the same.
            emulators.create_topic_and_subscription(project, DEAD_LETTER_TOPIC, settings.dead_letter_subscription)
            # An empty database holds no id from before ids were keyed: an empty
            # registry makes the track function check every id, as deployed.
            db = firestore.Client(project=project)
            save_registry(db, [])
            # Made by each scheduled run deployed; made now too, so the first clicks carry visitor keys.
            SaltKeeper(db, timeout=30).keep_ahead(datetime.now(timezone.utc))
            server = emulators.start_session(
                # One worker, on the track function's stack: uvicorn with uvloop and httptools.
                [sys.executable, "-m", "uvicorn", "--factory", "local.gateway:create_gateway",
                 "--host", host, "--port", str(port), "--workers", "1",
                 "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
                 "--app-dir", str(ROOT)],
                env=env,
            )
            wait_serving(port, server)
            partitions = settings.aggregate_partitions
            drains = f"?partition=0..{partitions - 1}" if partitions > 1 else ""
            print(f"o7tracker running on http://127.0.0.1:{port}  (track: /track/<id>?platform=Android, "
                  f"admin: /admin/campaigns, drain: /tasks/update_stats{drains}); "
                  "Ctrl-C stops it", file=sys.stderr)
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
