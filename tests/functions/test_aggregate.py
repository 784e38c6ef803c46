"""Both aggregate entry points, over both emulators: exact counts under redelivery, races and faults."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest.mock import patch

import aggregation
import pytest
from aggregation import Lease, build_drainer
from conftest import ROOT, function_app
from faults import private_emulators
from helpers import publish, pull_all, push_cloud_event_headers, push_envelope

from local import emulators
from shared.config import Settings
from shared.counting import Applier, Delivery, Journal, new_entry_id
from shared.events import MAX_EVENTS_PER_MESSAGE, ClickEvent, Producer, join_events
from shared.ids import keyed_ids
from shared.models import zero_counters
from shared.store import CampaignStore, read_as_of
from shared.utc import hour_of

NOW = datetime.now(timezone.utc)
T0 = hour_of(NOW) - timedelta(hours=2) + timedelta(minutes=15)
HORIZON = timedelta(days=Settings().redelivery_horizon_days)  # as deployed


@pytest.fixture
def store(db: Any) -> CampaignStore:
    return CampaignStore(db, Settings().counter_shards, keyed_ids(Settings.from_env()))


@pytest.fixture
def campaign_id(store: CampaignStore) -> int:
    return store.create({"redirect_url": "https://e.com/", "platforms": ["Android", "IPhone", "WindowsPhone"]}).id


@pytest.fixture
def producer() -> Producer:
    return Producer()


def click(campaign_id: int, producer: Producer, platform: str = "Android", at: datetime = T0,
          bot: bool = False) -> ClickEvent:
    return ClickEvent.new(campaign_id, platform, producer=producer, now=at, bot=bot)


def shown(store: CampaignStore, campaign_id: int) -> dict[str, int]:
    """The counters the admin API answers."""
    return dict(store.get(campaign_id).counters)


def push(client: Any, data: bytes, message_id: str) -> Any:
    return client.post("/", json=push_envelope(data, message_id), headers=push_cloud_event_headers(message_id))


def scheduled_run() -> dict[str, Any]:
    """``/tasks/update_stats`` as deployed: the aggregate_http function built from the environment."""
    answer = function_app("aggregate", "aggregate_http").test_client().post("/")
    body: dict[str, Any] = answer.get_json()
    assert answer.status_code in (200, 503), body
    return body


@pytest.fixture
def event_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduled run as deploy.sh sets it up with AGGREGATE_MODE=event: it applies, but does not drain."""
    monkeypatch.setenv("AGGREGATE_MODE", "event")


@pytest.fixture
def push_client(db: Any, pubsub_names: tuple[str, str]) -> Any:
    return function_app("aggregate", "aggregate_event").test_client()


# --- the event-triggered function ---------------------------------------------------------


def test_a_pushed_event_is_counted_once_however_often_it_is_delivered(
    push_client: Any, store: CampaignStore, campaign_id: int, producer: Producer, db: Any
) -> None:
    event = click(campaign_id, producer, "IPhone")
    for attempt in range(3):
        assert push(push_client, event.encode(), f"m-{attempt}").status_code == 200
    counters = shown(store, campaign_id)
    assert (counters["click_count"], counters["iphone_click_count"], counters["android_click_count"]) == (1, 1, 0)
    assert list(db.collection("journal").stream()) == []  # each push counted at once


def test_a_pushed_message_of_many_events_counts_each_once_and_its_bad_line_apart(
    push_client: Any, store: CampaignStore, campaign_id: int, producer: Producer, db: Any
) -> None:
    events = [click(campaign_id, producer) for _ in range(25)]
    data = join_events([e.encode() for e in events] + [b"junk"])
    for _ in range(2):  # and once more, as a redelivery
        assert push(push_client, data, "m-packed").status_code == 200
    assert shown(store, campaign_id)["click_count"] == 25
    assert list(db.collection("journal").stream()) == []


@pytest.mark.parametrize("data", [b"not json", b'{"click_id": 1}', b"",
                                  json.dumps({"click_id": "a" * 32, "campaign_id": 7, "platform": "Android",
                                              "ts": "9999-12-31T23:00-14:00"}).encode()])
def test_a_malformed_pushed_event_is_acknowledged_not_retried(
    push_client: Any, store: CampaignStore, campaign_id: int, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert push(push_client, data, "m-poison").status_code == 200
    assert shown(store, campaign_id)["click_count"] == 0
    assert [getattr(r, "message_ids", None) for r in caplog.records].count(["m-poison"]) == 1  # logged once


def test_an_undecodable_push_body_is_acknowledged(push_client: Any) -> None:
    envelope = {"message": {"data": "%%% not base64", "messageId": "m-x"}, "subscription": "s"}
    assert push_client.post("/", json=envelope, headers=push_cloud_event_headers("m-x")).status_code == 200


def test_an_event_for_a_deleted_campaign_is_acknowledged_and_not_counted(
    push_client: Any, store: CampaignStore, campaign_id: int, producer: Producer
) -> None:
    event = click(campaign_id, producer)
    store.delete(campaign_id)
    assert push(push_client, event.encode(), "m-late").status_code == 200
    campaign = store.db.collection("campaigns").document(str(campaign_id))
    assert not campaign.get().exists  # not recreated by an increment
    assert list(campaign.collection("days").stream()) == []


def test_a_stalled_firestore_asks_pub_sub_to_redeliver_within_the_call_deadline_then_counts_once(
    project: str, monkeypatch: pytest.MonkeyPatch, producer: Producer
) -> None:
    with private_emulators(project, "firestore") as started:
        firestore_emulator = started["firestore"]
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
        client = function_app("aggregate", "aggregate_event").test_client()
        from google.cloud import firestore

        db = firestore.Client(project=project)
        store = CampaignStore(db, Settings().counter_shards, keyed_ids(Settings.from_env()))
        campaign_id = store.create({"redirect_url": "https://e.com/", "platforms": ["Android"]}).id
        event = click(campaign_id, producer)
        with firestore_emulator.paused():
            started_at = time.monotonic()
            assert push(client, event.encode(), "m-1").status_code == 500  # Pub/Sub redelivers it
            assert time.monotonic() - started_at < 30  # the journal write's 10 s deadline, with margin
        assert push(client, event.encode(), "m-1").status_code == 200
        assert shown(store, campaign_id)["click_count"] == 1


# --- the scheduled run --------------------------------------------------------------------


def test_a_run_counts_good_duplicate_malformed_unknown_and_out_of_horizon_events(
    store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str], producer: Producer,
    db: Any,
) -> None:
    topic, subscription = pubsub_names
    events = [click(campaign_id, producer, ("Android", "IPhone", "WindowsPhone")[i % 3]) for i in range(250)]
    events.append(click(campaign_id, producer, bot=True))
    unknown = click(campaign_id + 1, producer)
    stale = click(campaign_id, producer, at=NOW - HORIZON - timedelta(minutes=5))
    ahead = click(campaign_id, producer, at=NOW + timedelta(hours=2))
    year_one = ClickEvent(**{**vars_of(events[0]), "seq": 10_000, "ts": datetime(1, 1, 1, 1, tzinfo=timezone.utc)})
    extra = [events[0], events[1], unknown, stale, ahead, year_one]
    publish(project, topic, [e.encode() for e in events + extra] + [b"junk"])
    body = scheduled_run()
    assert body["status"] == "Updated"
    assert (body["pulled"], body["journaled"], body["counted"], body["duplicates"], body["poison"]) == (
        258, 257, 251, 2, 5)
    counters = shown(store, campaign_id)
    assert counters == {**zero_counters(), "click_count": 250, "android_click_count": 84, "iphone_click_count": 83,
                        "windowsphone_click_count": 83, "bot_click_count": 1}
    hourly = store.hourly(campaign_id, T0 - timedelta(days=1), NOW + timedelta(days=1)).counts
    assert hourly == {hour_of(T0): counters}  # one bucket, the clicks' own hour
    assert pull_all(project, subscription) == []  # everything acked
    assert list(db.collection("journal").stream()) == []


def test_packed_messages_count_each_event_once_and_a_bad_line_alone_is_poison(
    store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str], producer: Producer,
    db: Any,
) -> None:
    topic, subscription = pubsub_names
    events = [click(campaign_id, producer) for _ in range(30)]
    packed = [join_events([e.encode() for e in events[:10]]),
              join_events([e.encode() for e in events[10:20]] + [b"junk"]),
              events[20].encode(),  # as published before packing
              join_events([e.encode() for e in events[20:]])]  # republished whole, one event again among them
    publish(project, topic, packed)
    body = scheduled_run()
    assert (body["messages"], body["pulled"], body["counted"], body["duplicates"], body["poison"]) == (
        4, 32, 30, 1, 1)
    assert shown(store, campaign_id)["click_count"] == 30
    assert pull_all(project, subscription) == []  # every message acked, the one with the bad line too
    assert list(db.collection("journal").stream()) == []


def test_a_batch_takes_whole_messages_and_at_most_fifty_times_its_size_however_messages_change(
    db: Any, campaign_id: int, project: str, pubsub_names: tuple[str, str], producer: Producer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGGREGATE_BATCH_SIZE", "20")
    publish(project, pubsub_names[0], [click(campaign_id, producer).encode() for _ in range(200)])
    events = [click(campaign_id, producer).encode() for _ in range(30 * MAX_EVENTS_PER_MESSAGE)]
    publish(project, pubsub_names[0], [join_events(events[i:i + MAX_EVENTS_PER_MESSAGE])
                                       for i in range(0, len(events), MAX_EVENTS_PER_MESSAGE)])
    drained = build_drainer(Settings.from_env(), Journal(db)).drain(NOW + timedelta(hours=1), time.monotonic() + 60)
    assert (drained.messages, drained.pulled, drained.received.journaled) == (230, 3200, 3200)
    batches = [entry.get("count") for entry in db.collection("journal").stream()]
    # one entry a batch (one campaign, few rows): 50 times the batch size, and a message more at most
    assert sum(batches) == 3200 and max(batches) <= 50 * 20 + MAX_EVENTS_PER_MESSAGE


def test_entries_the_apply_step_cannot_hold_are_counted_from_the_journal(
    store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str], producer: Producer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aggregation, "_MOST_ROWS_HELD", 0)  # as if the apply step were far behind
    publish(project, pubsub_names[0], [click(campaign_id, producer).encode() for _ in range(50)])
    body = scheduled_run()
    assert (body["counted"], body["journal_complete"], body["caught_up"]) == (50, True, True)
    assert shown(store, campaign_id)["click_count"] == 50 and body["as_of"] is not None


def test_a_message_with_an_event_not_written_goes_back_whole(db: Any, campaign_id: int, producer: Producer) -> None:
    # A fake for a fault that cannot be staged for real: the second of a batch's two journal writes fails.
    events = [click(campaign_id, producer) for _ in range(4)]
    deliveries = [Delivery("written", events[0].encode()),
                  Delivery("spans", join_events([e.encode() for e in events[1:]]))]
    journal = Journal(db)
    write, writes = journal._write, []

    def second_fails(entry: Any) -> Any:
        writes.append(entry)
        return write(entry) if len(writes) == 1 else None

    journal._write = second_fails  # type: ignore[method-assign]
    with patch("shared.counting._MOST_ROWS_PER_ENTRY", 3):  # entries of "written" and two of "spans", then one
        received = journal.receive(deliveries)
    assert (received.acked, received.failed, received.journaled) == (["written"], ["spans"], 3)


def test_inactive_clicks_count_apart_per_platform_in_the_totals_and_the_hours(
    store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str], producer: Producer,
    push_client: Any,
) -> None:
    def inactive(platform: str | None, bot: bool = False) -> ClickEvent:
        return ClickEvent.new(campaign_id, platform, producer=producer, now=T0, bot=bot, inactive=True)

    events = [click(campaign_id, producer, "IPhone"), inactive("Android"), inactive("Android"),
              inactive("WindowsPhone"), inactive("IPhone", bot=True), inactive(None, bot=True)]
    publish(project, pubsub_names[0], [e.encode() for e in events])
    assert scheduled_run()["counted"] == 6
    assert push(push_client, inactive("IPhone").encode(), "m-inactive").status_code == 200  # the event path too
    expected = {**zero_counters(), "click_count": 1, "iphone_click_count": 1, "bot_click_count": 2,
                "inactive_click_count": 4, "android_inactive_click_count": 2,
                "iphone_inactive_click_count": 1, "windowsphone_inactive_click_count": 1}
    assert shown(store, campaign_id) == expected
    assert store.hourly(campaign_id, T0 - timedelta(days=1), NOW + timedelta(days=1)).counts == {hour_of(T0): expected}


def test_journal_entries_written_before_inactive_existed_are_applied_as_active_clicks(
    db: Any, store: CampaignStore, campaign_id: int, producer: Producer, event_mode: None
) -> None:
    rows = [[producer.id, seq, "", campaign_id, "Android", False, int(T0.timestamp())] for seq in (1, 2, 3)]
    db.collection("journal").document(new_entry_id(0)).create(
        {"events": zlib.compress(json.dumps(rows).encode()), "count": 3})  # as pack wrote them
    assert scheduled_run()["counted"] == 3
    counters = shown(store, campaign_id)
    assert (counters["android_click_count"], counters["inactive_click_count"]) == (3, 0)


def vars_of(event: ClickEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in event.__slots__}


def test_a_replayed_or_republished_event_counts_once_across_runs_and_out_of_order(
    store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str], producer: Producer,
    db: Any,
) -> None:
    topic = pubsub_names[0]
    events = [click(campaign_id, producer) for _ in range(30)]
    publish(project, topic, [e.encode() for e in events[10:]])  # the later numbers first
    assert scheduled_run()["counted"] == 20
    publish(project, topic, [e.encode() for e in events[:10] + events[5:15]])  # a replay run twice, in part
    body = scheduled_run()
    assert (body["counted"], body["duplicates"]) == (10, 10)
    publish(project, topic, [e.encode() for e in events])  # all of it again
    assert scheduled_run()["counted"] == 0
    assert shown(store, campaign_id)["click_count"] == 30
    ledger = db.collection("producers").document(producer.id).get().to_dict()
    assert ledger["ranges"][:2] == [1, 30] and len(ledger["ranges"]) == 3  # merged into one range


def test_schema_1_events_in_flight_across_the_upgrade_count_once(
    store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str], db: Any
) -> None:
    def schema_1(click_id: str) -> bytes:
        return json.dumps({"click_id": click_id, "campaign_id": campaign_id, "platform": "IPhone",
                           "ts": T0.isoformat(), "user_agent": "", "referrer": "", "bot": False, "v": 1}).encode()

    counted_before = "b" * 32  # counted by the version before, which left its dedup record
    db.collection("clicks").document(counted_before).set({"expire_at": NOW + HORIZON})
    publish(project, pubsub_names[0], [schema_1("a" * 32), schema_1("a" * 32), schema_1(counted_before)])
    body = scheduled_run()
    assert (body["counted"], body["duplicates"]) == (1, 2)
    assert shown(store, campaign_id)["iphone_click_count"] == 1
    record = db.collection("clicks").document("a" * 32).get().to_dict()
    assert record["expire_at"] - datetime.now(timezone.utc) > HORIZON - timedelta(minutes=5)


def test_two_drains_and_two_appliers_at_once_count_every_event_exactly_once(
    db: Any, store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str],
    producer: Producer,
) -> None:
    topic, subscription = pubsub_names
    events = [click(campaign_id, producer) for _ in range(1500)]
    publish(project, topic, [e.encode() for e in events] * 2)  # every event delivered twice
    settings = Settings.from_env({**os.environ, "CLICKS_SUBSCRIPTION": subscription})
    counted: list[int] = []

    def aggregator() -> None:
        drained = build_drainer(settings, Journal(db)).drain(NOW + timedelta(days=1), time.monotonic() + 60)
        assert drained.caught_up and not drained.received.failed
        counted.append(Applier(db, HORIZON).apply(time.monotonic() + 60).counted)

    threads = [threading.Thread(target=aggregator) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counted) == 1500
    assert shown(store, campaign_id)["click_count"] == 1500
    assert pull_all(project, subscription) == []


KILLED_DRAIN = """
import os, signal, sys, time
from datetime import datetime, timezone
sys.path[:0] = [{root!r}, {root!r} + "/functions/aggregate"]
from aggregation import Drainer, build_drainer
from google.cloud import firestore
from shared.config import Settings
from shared.counting import Journal

def die_before_ack(self, done, failed):
    os.kill(os.getpid(), signal.SIGKILL)

Drainer._settle = die_before_ack
settings = Settings.from_env()
db = firestore.Client(project=settings.project)
build_drainer(settings, Journal(db)).drain(datetime.max.replace(tzinfo=timezone.utc), time.monotonic() + 30)
"""


def test_a_drain_killed_between_journal_write_and_ack_costs_only_a_redelivery(
    db: Any, store: CampaignStore, campaign_id: int, project: str, producer: Producer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic, subscription = "clicks-killed", f"clicks-killed-{producer.id}"
    emulators.create_topic_and_subscription(project, topic, subscription, ack_deadline_seconds=10)
    monkeypatch.setenv("CLICKS_SUBSCRIPTION", subscription)
    events = [click(campaign_id, producer) for _ in range(40)]
    publish(project, topic, [e.encode() for e in events])
    killed = subprocess.run([sys.executable, "-c", KILLED_DRAIN.format(root=str(ROOT))], env=os.environ.copy(),
                            timeout=60, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert len(list(db.collection("journal").stream())) == 1  # written, never acked
    time.sleep(11)  # the ack deadline passes: Pub/Sub delivers the batch again
    body = scheduled_run()
    assert (body["pulled"], body["counted"], body["duplicates"]) == (40, 40, 40)
    assert shown(store, campaign_id)["click_count"] == 40


def test_a_journal_that_raises_hands_the_batch_back_at_once_as_a_failed_write(
    db: Any, campaign_id: int, project: str, pubsub_names: tuple[str, str], producer: Producer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fake for a fault no emulator produces: a bug, not a failed write, in the journal.
    publish(project, pubsub_names[0], [click(campaign_id, producer).encode() for _ in range(5)])

    class Broken(Journal):
        def receive(self, deliveries: Any) -> Any:
            raise RuntimeError("a bug")

    drained = build_drainer(Settings.from_env(), Broken(db)).drain(datetime.now(timezone.utc), time.monotonic() + 30)
    assert len(drained.received.failed) == 5 and not drained.caught_up
    assert len(pull_all(project, pubsub_names[1])) == 5  # back now, not after the 60 s ack deadline


def test_a_run_ends_within_its_budget_and_the_next_one_goes_on(
    store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str], producer: Producer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backlog = 5000
    publish(project, pubsub_names[0], [click(campaign_id, producer).encode() for _ in range(backlog)])
    monkeypatch.setenv("AGGREGATE_BATCH_SIZE", "10")  # 500 journal writes: many seconds of work
    monkeypatch.setenv("AGGREGATE_MAX_SECONDS", "4")  # room for a 2 s pull, and not for the backlog
    before = read_as_of(store.db)
    first = scheduled_run()
    assert first["status"] == "Updated" and not first["caught_up"], first
    assert first["seconds"] < 4 + 2  # its budget, and a journal write in flight with a generous margin
    assert 0 < first["counted"] < backlog
    assert read_as_of(store.db) == before  # not caught up: as_of stays
    monkeypatch.setenv("AGGREGATE_MAX_SECONDS", "120")
    monkeypatch.setenv("AGGREGATE_BATCH_SIZE", "1000")
    rest = scheduled_run()
    assert first["counted"] + rest["counted"] == backlog and rest["caught_up"]
    assert shown(store, campaign_id)["click_count"] == backlog
    assert rest["as_of"] is not None and datetime.fromisoformat(rest["as_of"]) > NOW


def test_a_stalled_pub_sub_is_not_an_empty_backlog_and_the_run_still_ends_within_its_budget(
    store: CampaignStore, campaign_id: int, project: str, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with private_emulators(project, "pubsub") as started:
        pubsub_emulator = started["pubsub"]
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
        emulators.create_topic_and_subscription(project, "clicks", "clicks-agg")
        monkeypatch.setenv("CLICKS_SUBSCRIPTION", "clicks-agg")
        publish(project, "clicks", [click(campaign_id, producer).encode()])
        assert scheduled_run()["counted"] == 1
        as_of = read_as_of(store.db)
        with pubsub_emulator.paused():
            body = scheduled_run()
        assert (body["caught_up"], body["counted"]) == (False, 0)
        assert body["seconds"] < Settings().aggregate_max_seconds
        assert read_as_of(store.db) == as_of  # an unanswered pull proves nothing: as_of stays


def test_a_run_while_another_holds_the_lease_applies_but_does_not_drain(
    db: Any, store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str],
    producer: Producer,
) -> None:
    publish(project, pubsub_names[0], [click(campaign_id, producer).encode()])
    other = Lease(db, 0)
    assert other.acquire(60)
    body = scheduled_run()
    assert (body["drained"], body["pulled"], body["as_of"]) == (False, 0, None)
    other.release()
    body = scheduled_run()
    assert (body["drained"], body["counted"]) == (True, 1) and body["as_of"] is not None


def subscription_retention() -> timedelta:
    """The longest message retention deploy.sh gives a subscription: how late a redelivery can come."""
    days = re.findall(r"--message-retention-duration=(\d+)d", (ROOT / "deploy.sh").read_text())
    assert days, "deploy.sh sets no message retention"
    return timedelta(days=max(map(int, days)))


@pytest.mark.parametrize("entry_point", ["aggregate_event", "aggregate_http"])
def test_what_guards_against_double_counting_outlives_every_redelivery_as_deployed(
    db: Any, campaign_id: int, project: str, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
    entry_point: str, producer: Producer,
) -> None:
    monkeypatch.delenv("REDELIVERY_HORIZON_DAYS", raising=False)  # deploy.sh passes it only when set
    event = click(campaign_id, producer, at=NOW)
    client = function_app("aggregate", entry_point).test_client()
    if entry_point == "aggregate_event":
        assert push(client, event.encode(), "m-retention").status_code == 200
    else:
        publish(project, pubsub_names[0], [event.encode()])
        assert client.post("/").get_json()["counted"] == 1
    ledger = db.collection("producers").document(producer.id).get().to_dict()
    assert ledger["expire_at"] - NOW > subscription_retention() + timedelta(days=1)
    assert ledger["expire_at"] - NOW > HORIZON
