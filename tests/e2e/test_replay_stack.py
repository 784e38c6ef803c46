"""End to end: clicks while ``./run.sh``'s Pub/Sub is stalled, replayed from its log, counted exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from helpers import pulled_events
from test_stack import AUTH, ROOT, Stack, start_stack

from local import emulators
from shared.config import Settings
from tools.replay import Summary, click_events, read_entries

PLAN = ["Android"] * 6 + ["IPhone"] * 4
AUDIT_SUBSCRIPTION = "replay-audit"  # a second subscription sees every event without taking one from the drain
STALL_BOUND_SECONDS = 15.0  # every redirect comes within it, though Pub/Sub never answers (generous)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("PUBLISH_WAIT_SECONDS", "1")  # the longest a stalled publish holds a click (the default)
    stack = start_stack(tmp_path / "run.log")
    yield stack
    os.killpg(stack.process.pid, signal.SIGINT)  # Ctrl-C: the stack stops its emulators too
    try:
        stack.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(stack.process.pid, signal.SIGKILL)


def logged_click_ids(log: Path) -> set[str]:
    with log.open(encoding="utf-8", errors="replace") as stream:
        return {event.click_id for event in click_events(read_entries(stream, log.name), Summary())}


def as_gcloud_logging_read(log: Path) -> str:
    """The log's JSON lines as ``gcloud logging read --format=json`` would print them once in Cloud Logging."""
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            payload = json.loads(line)
            entries.append({"severity": payload.pop("severity"), "jsonPayload": payload,
                            "logName": "projects/p/logs/run.googleapis.com%2Fstderr"})
    return json.dumps(entries[::-1], indent=2)  # gcloud lists the newest first


def test_clicks_while_pubsub_is_stalled_are_replayed_from_the_log_and_counted_once(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "run.log"
    project = emulators.DEFAULT_PROJECT
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{stack.ports['PUBSUB_PORT']}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", project)
    monkeypatch.delenv("CLICKS_TOPIC", raising=False)
    monkeypatch.delenv("CLICKS_SUBSCRIPTION", raising=False)
    emulators.create_topic_and_subscription(project, Settings().clicks_topic, AUDIT_SUBSCRIPTION)
    campaign_id = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10, json={
        "redirect_url": "https://e.example/", "platforms": ["Android", "IPhone"]}).json()["id"]

    def click(platform: str) -> int:
        return requests.get(f"{stack.url}/track/{campaign_id}?platform={platform}", allow_redirects=False,
                            timeout=30).status_code

    assert click("Android") == 307  # the campaign cached and the publisher connected before the stall
    with emulators.paused(stack.ports["PUBSUB_PORT"]), ThreadPoolExecutor(len(PLAN)) as pool:
        started = time.monotonic()
        assert list(pool.map(click, PLAN)) == [307] * len(PLAN)
        assert time.monotonic() - started < STALL_BOUND_SECONDS

    # Every answered click is published (even late, its timed-out publish landing after the
    # resume) or in the log, and some are in both: exactly what replay must not count twice.
    answered = 1 + len(PLAN)
    published: set[str] = set()
    deadline = time.monotonic() + 60
    while True:
        published |= {event.click_id for event in pulled_events(project, AUDIT_SUBSCRIPTION)}
        logged = logged_click_ids(log)
        if len(published | logged) >= answered or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(published | logged) == answered
    assert logged, "the stall left no click unconfirmed"

    gcloud_json = tmp_path / "entries.json"
    gcloud_json.write_text(as_gcloud_logging_read(log))
    for source in (log, gcloud_json):  # the same clicks replayed twice, once from each form
        done = subprocess.run([sys.executable, "-m", "tools.replay", str(source)], cwd=ROOT, env=os.environ,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f" republished={len(logged)} " in done.stdout

    drained = requests.get(f"{stack.url}/tasks/update_stats", auth=AUTH, timeout=60)
    assert drained.status_code == 200, drained.text
    assert drained.json()["counted"] == answered and drained.json()["duplicates"] >= len(logged)
    counted = requests.get(f"{stack.url}/admin/campaigns/{campaign_id}", auth=AUTH, timeout=10).json()
    assert (counted["click_count"], counted["android_click_count"], counted["iphone_click_count"]) == (11, 7, 4)
