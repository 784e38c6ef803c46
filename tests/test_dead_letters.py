"""Dead letters, against the Pub/Sub emulator: ``python -m tools.dead_letters`` and the scheduled run's check.

The emulator does not implement dead-letter policies, so no message is ever
dead-lettered here by failing deliveries. Each test publishes straight to a
dead-letter topic with its subscription instead, which is all a dead-lettered
message is: a message on that subscription, with the attributes Pub/Sub adds
when it forwards one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import function_app
from dead_letters import DeadLetterCheck, build_dead_letter_check
from google.cloud import pubsub_v1
from helpers import log_lines, publish, pull_all, pulled_events

from local import emulators
from shared.config import Settings
from shared.events import ClickEvent, Producer
from shared.ids import keyed_ids
from shared.store import CampaignStore

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
PRODUCER = Producer()
LATER = float("inf")  # a deadline (monotonic) never reached
# What Pub/Sub adds to a message it dead-letters.
FORWARDED = {"CloudPubSubDeadLetterSourceDeliveryCount": "10",
             "CloudPubSubDeadLetterSourceSubscription": "o7-clicks-aggregate"}


@pytest.fixture
def dead_letters(project: str, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A fresh dead-letter topic and its subscription, named in the environment as deploy.sh names it."""
    suffix = uuid.uuid4().hex[:12]
    topic, subscription = f"dead-{suffix}", f"dead-{suffix}-review"
    emulators.create_topic_and_subscription(project, topic, subscription)
    monkeypatch.setenv("DEAD_LETTER_SUBSCRIPTION", subscription)
    return topic, subscription


def dead_letter(project: str, topic: str, events: list[ClickEvent]) -> None:
    publisher = pubsub_v1.PublisherClient()
    path = publisher.topic_path(project, topic)
    for future in [publisher.publish(path, e.encode(), **FORWARDED) for e in events]:
        future.result(timeout=30)


def click(campaign_id: int = 42, platform: str = "Android") -> ClickEvent:
    return ClickEvent.new(campaign_id, platform, producer=PRODUCER, now=T0)


def tool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.dead_letters", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)


# --- count --------------------------------------------------------------------------------------


def test_count_says_how_many_wait_and_leaves_them_there(project: str, dead_letters: tuple[str, str]) -> None:
    topic, subscription = dead_letters
    events = [click(), click(), click()]
    dead_letter(project, topic, events)
    path = f"projects/{project}/subscriptions/{subscription}"
    for _ in range(2):  # handed back, not acknowledged and not held: counted again at once
        done = tool("count")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"dead letters: waiting 3 on {path}"
    assert sorted(e.click_id for e in pulled_events(project, subscription)) == sorted(e.click_id for e in events)


def test_count_stops_at_max_and_says_at_least(project: str, dead_letters: tuple[str, str]) -> None:
    topic, subscription = dead_letters
    dead_letter(project, topic, [click() for _ in range(5)])
    assert tool("count", "--max", "3").stdout.split()[2:6] == ["waiting", "at", "least", "3"]
    assert tool("count", "--max", "10").stdout.split()[2:4] == ["waiting", "5"]
    assert len(pull_all(project, subscription)) == 5


def test_count_of_an_empty_subscription_is_zero(project: str, dead_letters: tuple[str, str]) -> None:
    done = tool("count")
    assert done.returncode == 0 and done.stdout.split()[2:4] == ["waiting", "0"]


# --- requeue ------------------------------------------------------------------------------------


def test_requeue_publishes_each_message_with_its_data_and_attributes_then_acknowledges_it(
    project: str, pubsub_names: tuple[str, str], dead_letters: tuple[str, str]
) -> None:
    topic, subscription = dead_letters
    events = [click(7, "Android"), click(7, "IPhone"), click(8, "WindowsPhone")]
    dead_letter(project, topic, events)
    done = tool("requeue")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"dead letters: requeued=3 failed=0 to projects/{project}/topics/{pubsub_names[0]}"
    received = pull_all(project, pubsub_names[1])
    assert sorted(m.message.data for m in received) == sorted(e.encode() for e in events)
    assert all(dict(m.message.attributes) == FORWARDED for m in received)
    assert pull_all(project, subscription) == []


def test_requeue_moves_at_most_max(project: str, pubsub_names: tuple[str, str], dead_letters: tuple[str, str]) -> None:
    topic, subscription = dead_letters
    dead_letter(project, topic, [click() for _ in range(5)])
    done = tool("requeue", "--max", "2")
    assert done.returncode == 0 and done.stdout.split()[2:4] == ["requeued=2", "failed=0"]
    assert len(pull_all(project, pubsub_names[1])) == 2
    assert len(pull_all(project, subscription)) == 3


def test_a_dry_run_counts_what_it_would_move_and_moves_nothing(
    project: str, pubsub_names: tuple[str, str], dead_letters: tuple[str, str]
) -> None:
    topic, subscription = dead_letters
    dead_letter(project, topic, [click(), click()])
    done = tool("requeue", "--dry-run")
    assert done.returncode == 0
    assert done.stdout.startswith("dead letters: would requeue 2 on ")
    assert pull_all(project, pubsub_names[1]) == []
    assert len(pull_all(project, subscription)) == 2


def test_a_refused_publish_leaves_the_message_waiting_and_fails_the_command(
    project: str, pubsub_names: tuple[str, str], dead_letters: tuple[str, str]
) -> None:
    topic, _ = dead_letters
    dead_letter(project, topic, [click(), click()])
    done = tool("requeue", env={"CLICKS_TOPIC": "no-such-topic"})  # NOT_FOUND
    assert done.returncode == 1
    assert done.stdout.split()[2:4] == ["requeued=0", "failed=2"]
    assert "dead-lettered click event not requeued" in done.stderr
    # handed back at once, not left to its lease: still all there
    assert tool("count").stdout.split()[2:4] == ["waiting", "2"]


def test_requeued_clicks_count_once_even_when_one_had_counted_before(
    db: Any, project: str, pubsub_names: tuple[str, str], dead_letters: tuple[str, str]
) -> None:
    settings = Settings.from_env()  # the id key as the functions read it
    store = CampaignStore(db, settings.counter_shards, keyed_ids(settings))
    campaign_id = store.create({"redirect_url": "https://e.com/", "platforms": ["Android", "IPhone"]}).id
    counted_before, waiting = click(campaign_id, "Android"), click(campaign_id, "IPhone")
    publish(project, pubsub_names[0], [counted_before.encode()])
    drain = function_app("aggregate", "aggregate_http").test_client()
    assert drain.post("/").json["counted"] == 1
    dead_letter(project, dead_letters[0], [counted_before, waiting])

    assert tool("requeue").returncode == 0
    drained = drain.post("/")
    assert (drained.json["counted"], drained.json["duplicates"]) == (1, 1)
    counters = store.get(campaign_id).counters
    assert (counters["click_count"], counters["android_click_count"], counters["iphone_click_count"]) == (2, 1, 1)


@pytest.mark.parametrize(("args", "env", "message"), [
    (["count"], {"GOOGLE_CLOUD_PROJECT": ""}, "GOOGLE_CLOUD_PROJECT"),
    (["count", "--max", "0"], {}, "--max must be positive"),
    (["requeue", "--timeout", "0"], {}, "--timeout must be positive"),
    (["fold"], {}, "invalid choice"),
])
def test_bad_usage_says_why(args: list[str], env: dict[str, str], message: str) -> None:
    done = tool(*args, env=env)
    assert done.returncode == 2
    assert message in done.stderr


def test_a_missing_subscription_is_an_error_not_zero(project: str, pubsub_names: tuple[str, str]) -> None:
    done = tool("count", env={"DEAD_LETTER_SUBSCRIPTION": "no-such-subscription"})
    assert done.returncode == 1
    assert "no-such-subscription" in done.stderr and done.stdout == ""


# --- the scheduled run's check ------------------------------------------------------------------


def test_the_check_reports_the_backlog_and_logs_an_error_line_to_alert_on(
    project: str, dead_letters: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    topic, subscription = dead_letters
    check = build_dead_letter_check(Settings.from_env())  # DEAD_LETTER_SUBSCRIPTION as deploy.sh sets it
    assert check.check(LATER) == {"dead_letters": 0, "dead_letters_capped": False}
    assert log_lines(caplog, "dead-lettered click events waiting") == []

    dead_letter(project, topic, [click(), click()])
    assert check.check(LATER) == {"dead_letters": 2, "dead_letters_capped": False}
    [line] = log_lines(caplog, "dead-lettered click events waiting")
    assert (line["severity"], line["dead_letters"], line["capped"]) == ("ERROR", 2, False)
    assert line["subscription"] == f"projects/{project}/subscriptions/{subscription}"

    caplog.clear()
    capped = DeadLetterCheck(check.subscriber, check.subscription_path, cap=1)
    assert capped.check(LATER) == {"dead_letters": 1, "dead_letters_capped": True}
    assert log_lines(caplog, "dead-lettered click events waiting")[0]["capped"] is True
    assert len(pull_all(project, subscription)) == 2  # counting took nothing away


def test_the_check_waits_no_longer_than_the_run_has_left(dead_letters: tuple[str, str]) -> None:
    check = build_dead_letter_check(Settings.from_env())
    started = time.monotonic()
    assert check.check(started + 0.2) == {"dead_letters": 0, "dead_letters_capped": False}
    assert time.monotonic() - started < 0.2 + 1  # its pull waited for what was left
    assert check.check(started) == {"dead_letters": None, "dead_letters_capped": False}  # no time: not counted


def test_a_check_that_cannot_count_warns_and_does_not_fail_the_run(
    project: str, dead_letters: tuple[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DEAD_LETTER_SUBSCRIPTION", "no-such-subscription")
    check = build_dead_letter_check(Settings.from_env())
    assert check.check(LATER) == {"dead_letters": None, "dead_letters_capped": False}
    [line] = log_lines(caplog, "dead-letter backlog not counted")
    assert line["severity"] == "WARNING" and "no-such-subscription" in line["subscription"]
