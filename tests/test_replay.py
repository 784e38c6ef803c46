"""``python -m tools.replay``: reading unpublished clicks from logs and publishing them again."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import function_app
from helpers import pull_all, pulled_events

from local.emulators import free_port
from shared.config import Settings
from shared.events import ClickEvent, Producer
from shared.ids import keyed_ids
from shared.store import CampaignStore
from tools.replay import Summary, click_events, read_entries

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime.now(timezone.utc).replace(microsecond=0)
PRODUCER = Producer()


def click(campaign_id: int = 42, platform: str | None = "Android", bot: bool = False) -> ClickEvent:
    return ClickEvent.new(campaign_id, platform, producer=PRODUCER, user_agent="UA/1", referrer="https://ref/",
                          bot=bot, now=T0)


def contract_line(event: ClickEvent, outcome: str = "unknown") -> str:
    """The ERROR line the track function writes for an unconfirmed publish."""
    message = "click event publish outcome unknown" if outcome == "unknown" else "click event publish failed"
    return json.dumps({"severity": "ERROR", "message": message, "logger": "o7tracker.publishing",
                       "outcome": outcome, "click_id": event.click_id, "event": event.fields(),
                       "topic": "projects/p/topics/o7-clicks", "error": "TimeoutError()"})


def legacy_line(event: ClickEvent) -> str:
    """The same event as the first track function logged it: another message, no outcome field."""
    return json.dumps({"severity": "ERROR", "message": "click event not published", "logger": "o7tracker.publishing",
                       "event": event.fields(), "topic": "projects/p/topics/o7-clicks", "error": "NotFound()"})


def log_entry(payload: dict[str, Any], severity: str) -> dict[str, Any]:
    """A LogEntry as ``gcloud logging read --format=json`` prints it: severity lifted out of the payload."""
    return {
        "insertId": "abc", "logName": "projects/p/logs/run.googleapis.com%2Fstderr", "severity": severity,
        "jsonPayload": {k: v for k, v in payload.items() if k != "severity"},
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": "track"}},
        "timestamp": "2026-11-29T09:30:00.123456Z", "receiveTimestamp": "2026-11-29T09:30:00.2Z",
    }


def parse(text: str) -> tuple[list[ClickEvent], Summary, str]:
    summary, report = Summary(), io.StringIO()
    events = list(click_events(read_entries(io.StringIO(text), "log"), summary, report))
    return events, summary, report.getvalue()


# --- reading ------------------------------------------------------------------------------------


def test_stderr_lines_yield_every_error_event_among_other_output() -> None:
    a, b, c = click(platform="Android"), click(platform="IPhone"), click(platform=None, bot=True)
    text = "\n".join([
        "[2026-11-29 09:29:58 +0000] [7] [INFO] Starting gunicorn 23.0.0",
        "Traceback (most recent call last):",
        '  File "main.py", line 1, in <module> {broken',
        contract_line(a),
        json.dumps({"severity": "INFO", "message": "cold start", "logger": "o7tracker.track"}),
        json.dumps({"severity": "WARNING", "message": "poison", "event": a.fields()}),  # not an ERROR: not a click
        json.dumps({"severity": "ERROR", "message": "lookup failed", "event": "not a dict"}),
        json.dumps({"severity": "ERROR", "message": "click failed; sent to the fallback", "path": "/track/1"}),
        legacy_line(b),
        "2026-11-29T09:30:01.5Z stderr F " + contract_line(c, "failed"),  # a collector's prefix
        "",
        '{"severity": "ERROR", "event": {',  # cut off mid-line
    ])
    events, summary, report = parse(text)
    assert events == [a, b, c]
    assert (summary.read, summary.invalid, summary.duplicates) == (3, 0, 0)
    assert report == ""


def test_gcloud_logging_read_json_yields_the_error_entries() -> None:
    a, b = click(platform="Android"), click(platform="WindowsPhone")
    document = [
        log_entry(json.loads(contract_line(a)), "ERROR"),
        {"insertId": "t", "severity": "ERROR", "textPayload": "Traceback (most recent call last):"},
        log_entry({"message": "cold start", "event": b.fields()}, "INFO"),
        log_entry(json.loads(legacy_line(b)), "ERROR"),
    ]
    events, summary, _ = parse(json.dumps(document, indent=2))
    assert events == [a, b]
    assert summary.read == 2


def test_an_empty_gcloud_answer_has_nothing_to_replay() -> None:
    assert parse("[]\n")[0] == []


def test_lines_starting_with_a_bracket_are_read_as_lines_not_as_a_document() -> None:
    a = click()
    events, _, _ = parse("\n[2026-11-29 09:29:58 +0000] [7] [INFO] Booting worker\n" + contract_line(a) + "\n")
    assert events == [a]


@pytest.mark.parametrize(("change", "reason"), [
    ({"click_id": "not-hex"}, "click_id"),
    ({"platform": "Symbian"}, "platform"),
    ({"campaign_id": -1}, "campaign_id"),
    ({"ts": "yesterday"}, "ts"),
    ({"ts": "2026-11-29T09:30:00"}, "time zone"),
])
def test_an_invalid_event_is_skipped_and_reported_where_it_was(change: dict[str, Any], reason: str) -> None:
    good, bad = click(), click()
    line = json.loads(contract_line(bad))
    line["event"].update(change)
    events, summary, report = parse(contract_line(good) + "\n" + json.dumps(line) + "\n")
    assert events == [good]
    assert (summary.read, summary.invalid) == (2, 1)
    assert report.startswith("skipped log:2: invalid event:") and reason in report


def test_a_click_logged_twice_is_replayed_once() -> None:
    a, b = click(), click()
    events, summary, _ = parse("\n".join([contract_line(a), contract_line(b), legacy_line(a)]))
    assert events == [a, b]
    assert (summary.read, summary.duplicates) == (3, 1)


# --- the command, against the Pub/Sub emulator --------------------------------------------------


def replay(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.replay", *args], cwd=ROOT, input=stdin,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)


def test_replay_republishes_each_event_with_its_original_click_id(
    project: str, pubsub_names: tuple[str, str], tmp_path: Path
) -> None:
    events = [click(7, "Android"), click(7, "IPhone"), click(8, None, bot=True)]
    stderr_log = tmp_path / "track.log"
    stderr_log.write_text("[INFO] Booting worker\n" + "\n".join(contract_line(e) for e in events[:2]) + "\n")
    gcloud_json = tmp_path / "entries.json"
    gcloud_json.write_text(json.dumps([log_entry(json.loads(contract_line(events[2], "failed")), "ERROR")]))

    done = replay(str(stderr_log), str(gcloud_json))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "replay: read=3 republished=3 duplicates=0 invalid=0 failed=0"
    assert sorted(pulled_events(project, pubsub_names[1]), key=events.index) == events


def test_replay_reads_stdin(project: str, pubsub_names: tuple[str, str]) -> None:
    event = click()
    done = replay("-", stdin="some other line\n" + contract_line(event) + "\n")
    assert done.returncode == 0, done.stderr
    assert pulled_events(project, pubsub_names[1]) == [event]


def test_replaying_twice_counts_each_click_once(
    db: Any, project: str, pubsub_names: tuple[str, str], tmp_path: Path
) -> None:
    settings = Settings.from_env()  # the id key as the functions read it
    store = CampaignStore(db, settings.counter_shards, keyed_ids(settings))
    campaign_id = store.create({"redirect_url": "https://e.com/", "platforms": ["Android", "IPhone"]}).id
    events = [click(campaign_id, "Android"), click(campaign_id, "Android"), click(campaign_id, "IPhone")]
    log = tmp_path / "track.log"
    log.write_text("\n".join(contract_line(e) for e in events) + "\n")
    for _ in range(2):
        assert replay(str(log)).returncode == 0

    drained = function_app("aggregate", "aggregate_http").test_client().post("/")
    assert drained.status_code == 200
    assert (drained.json["counted"], drained.json["duplicates"]) == (3, 3)
    counters = store.get(campaign_id).counters
    assert (counters["click_count"], counters["android_click_count"], counters["iphone_click_count"]) == (3, 2, 1)


def test_a_dry_run_publishes_nothing(project: str, pubsub_names: tuple[str, str]) -> None:
    done = replay("--dry-run", "-", stdin=contract_line(click()) + "\n" + contract_line(click()))
    assert done.returncode == 0
    assert done.stdout.strip() == "replay: read=2 would_republish=2 duplicates=0 invalid=0 failed=0"
    assert pull_all(project, pubsub_names[1]) == []


def test_a_refused_publish_fails_the_command_and_logs_a_replayable_line(
    project: str, pubsub_names: tuple[str, str]
) -> None:
    event = click()
    done = replay("-", stdin=contract_line(event), env={"CLICKS_TOPIC": "no-such-topic"})  # NOT_FOUND
    assert done.returncode == 1
    assert done.stdout.strip() == "replay: read=1 republished=0 duplicates=0 invalid=0 failed=1"
    [line] = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert (line["severity"], line["outcome"], line["click_id"]) == ("ERROR", "failed", event.click_id)
    assert parse(done.stderr)[0] == [event]


def test_an_unreachable_pubsub_is_an_unknown_outcome_within_the_timeout(
    project: str, pubsub_names: tuple[str, str]
) -> None:
    event = click()
    done = replay("--timeout", "1", "-", stdin=contract_line(event),
                  env={"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{free_port()}"})  # a closed port
    assert done.returncode == 1
    [line] = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert (line["outcome"], line["message"]) == ("unknown", "click event replay outcome unknown")
    assert parse(done.stderr)[0] == [event]


@pytest.mark.parametrize(("args", "env", "message"), [
    (["/no/such/file"], {}, "cannot read /no/such/file"),
    (["-"], {"GOOGLE_CLOUD_PROJECT": ""}, "GOOGLE_CLOUD_PROJECT"),
])
def test_bad_usage_publishes_nothing_and_says_why(args: list[str], env: dict[str, str], message: str) -> None:
    done = replay(*args, stdin="", env=env)
    assert done.returncode == 2
    assert message in done.stderr
