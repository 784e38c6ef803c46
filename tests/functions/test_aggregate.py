"""Both aggregate entry points, over both emulators: exact counts under redelivery and faults."""

from __future__ import annotations

import re
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aggregation import Drainer, build_drainer
from conftest import ROOT, function_app
from google.api_core import exceptions as gexc
from helpers import publish, pull_all, push_cloud_event_headers, push_envelope
from upkeep import TotalsRefresher

from shared.config import Settings
from shared.counting import ClickFolder, Delivery
from shared.events import ClickEvent
from shared.store import CampaignStore

T0 = datetime(2026, 11, 28, 10, 15, tzinfo=timezone.utc)
SHARDS = Settings().counter_shards  # as the functions under test read and write them


def new_folder(db: Any) -> ClickFolder:
    return ClickFolder(db, SHARDS, dedup_retention=timedelta(days=8))


@pytest.fixture
def store(db: Any) -> CampaignStore:
    return CampaignStore(db, counter_shards=SHARDS)


@pytest.fixture
def campaign_id(store: CampaignStore) -> int:
    return store.create({"redirect_url": "https://e.com/", "platforms": ["Android", "IPhone", "WindowsPhone"]}).id


@pytest.fixture
def folder(db: Any) -> ClickFolder:
    return new_folder(db)


def click(campaign_id: int, platform: str = "Android", at: datetime = T0, bot: bool = False) -> ClickEvent:
    return ClickEvent.new(campaign_id, platform, now=at, bot=bot)


def totals(store: CampaignStore, campaign_id: int) -> dict[str, int]:
    return store.counters([campaign_id])[campaign_id]


def push(client: Any, data: bytes, message_id: str) -> Any:
    return client.post("/", json=push_envelope(data, message_id), headers=push_cloud_event_headers(message_id))


@pytest.fixture
def push_client(db: Any, pubsub_names: tuple[str, str]) -> Any:
    return function_app("aggregate", "aggregate_event").test_client()


def test_a_pushed_event_is_counted_once_however_often_it_is_delivered(
    push_client: Any, store: CampaignStore, campaign_id: int
) -> None:
    event = click(campaign_id, "IPhone")
    for attempt in range(3):
        assert push(push_client, event.encode(), f"m-{attempt}").status_code == 200
    counters = totals(store, campaign_id)
    assert counters["click_count"] == 1 and counters["iphone_click_count"] == 1
    assert counters["android_click_count"] == 0 and counters["windowsphone_click_count"] == 0


@pytest.mark.parametrize("data", [b"not json", b'{"click_id": 1}', b""])
def test_a_malformed_pushed_event_is_acknowledged_not_retried(
    push_client: Any, store: CampaignStore, campaign_id: int, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert push(push_client, data, "m-poison").status_code == 200
    assert totals(store, campaign_id)["click_count"] == 0
    assert any(getattr(r, "message_ids", None) == ["m-poison"] for r in caplog.records)


def test_an_undecodable_push_body_is_acknowledged(push_client: Any) -> None:
    envelope = {"message": {"data": "%%% not base64", "messageId": "m-x"}, "subscription": "s"}
    assert push_client.post("/", json=envelope, headers=push_cloud_event_headers("m-x")).status_code == 200


def test_an_event_for_a_deleted_campaign_is_acknowledged_and_not_counted(
    push_client: Any, store: CampaignStore, campaign_id: int
) -> None:
    event = click(campaign_id)
    store.delete(campaign_id)
    assert push(push_client, event.encode(), "m-late").status_code == 200
    assert store.db.collection("campaigns").document(str(campaign_id)).collection("counter_shards").get() == []


class FailingCommits:
    """Wraps the real client so the next ``failures`` commits raise: a failed commit
    is a fault the emulator cannot be made to produce, so it is injected here."""

    def __init__(self, db: Any, failures: int) -> None:
        self._db = db
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def batch(self) -> Any:
        batch = self._db.batch()
        if self.failures:
            self.failures -= 1

            def fail() -> None:
                raise gexc.ServiceUnavailable("injected commit failure")

            batch.commit = fail
        return batch


def test_a_failed_commit_asks_pub_sub_to_redeliver_then_counts_once(
    push_client: Any, store: CampaignStore, campaign_id: int, db: Any
) -> None:
    main = sys.modules["main"]
    main.folder.set(new_folder(FailingCommits(db, failures=1)))
    event = click(campaign_id)
    assert push(push_client, event.encode(), "m-1").status_code == 500
    assert totals(store, campaign_id)["click_count"] == 0
    assert push(push_client, event.encode(), "m-1").status_code == 200
    assert totals(store, campaign_id)["click_count"] == 1


def test_a_batch_folds_good_duplicate_malformed_and_unknown_events(
    folder: ClickFolder, store: CampaignStore, campaign_id: int
) -> None:
    good = [click(campaign_id, p) for p in ("Android", "Android", "IPhone", "WindowsPhone")]
    bot = click(campaign_id, "IPhone", bot=True)
    deliveries = [Delivery(f"m{i}", e.encode()) for i, e in enumerate([*good, bot])]
    deliveries += [Delivery("dup", good[0].encode()), Delivery("bad", b"{oops"),
                   Delivery("gone", click(123456789).encode())]
    result = folder.fold(deliveries)
    assert (result.counted, result.duplicates, result.poison) == (5, 1, 2)
    assert sorted(result.acked) == sorted(d.message_id for d in deliveries) and result.failed == []
    assert totals(store, campaign_id) == {
        "click_count": 4, "android_click_count": 2, "iphone_click_count": 1,
        "windowsphone_click_count": 1, "bot_click_count": 1,
    }


def test_a_crash_between_commit_and_ack_costs_only_a_redelivery(
    folder: ClickFolder, store: CampaignStore, campaign_id: int
) -> None:
    events = [click(campaign_id, "Android") for _ in range(10)]
    deliveries = [Delivery(f"m{i}", e.encode()) for i, e in enumerate(events)]
    folder.fold(deliveries)  # committed, then the process dies: nothing acked
    result = new_folder(store.db).fold(list(reversed(deliveries)))
    assert (result.counted, result.duplicates) == (0, 10)
    assert len(result.acked) == 10
    assert totals(store, campaign_id)["click_count"] == 10


def test_hourly_buckets_follow_the_click_time_and_sum_to_the_totals(
    folder: ClickFolder, store: CampaignStore, campaign_id: int
) -> None:
    hours = [T0, T0 + timedelta(minutes=40), T0 + timedelta(hours=1), T0 + timedelta(hours=5, minutes=59)]
    events = [click(campaign_id, "Android", at) for at in hours] + [click(campaign_id, "IPhone", hours[2])]
    folder.fold([Delivery(e.click_id, e.encode()) for e in events])
    TotalsRefresher(store.db, SHARDS, max_seconds=60).refresh()  # as the scheduled run does
    base = T0.replace(minute=0)
    series = store.hourly(campaign_id, base, base + timedelta(hours=7))
    assert {h: c["click_count"] for h, c in series.items()} == {
        base: 2, base + timedelta(hours=1): 2, base + timedelta(hours=6): 1}
    assert series[base + timedelta(hours=1)]["iphone_click_count"] == 1
    assert sum(c["click_count"] for c in series.values()) == totals(store, campaign_id)["click_count"]
    assert store.get(campaign_id).counters == totals(store, campaign_id)


def test_dedup_records_expire_after_the_retention(folder: ClickFolder, db: Any, campaign_id: int) -> None:
    event = click(campaign_id)
    folder.fold([Delivery("m", event.encode())])
    record = db.collection("clicks").document(event.click_id).get().to_dict()
    expected = datetime.now(timezone.utc) + timedelta(days=8)
    assert abs(record["expire_at"] - expected) < timedelta(minutes=1)


def drainer(db: Any, project: str, subscription: str, batch_size: int = 100) -> Drainer:
    settings = Settings(project=project, clicks_subscription=subscription, aggregate_batch_size=batch_size)
    return build_drainer(settings, new_folder(db))


def test_the_scheduled_drain_counts_the_backlog_and_acks_it(
    db: Any, store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str]
) -> None:
    topic, subscription = pubsub_names
    events = [click(campaign_id, ("Android", "IPhone", "WindowsPhone")[i % 3]) for i in range(250)]
    publish(project, topic, [e.encode() for e in events] + [events[0].encode(), events[1].encode(), b"junk"])
    answer = function_app("aggregate", "aggregate_http").test_client().post("/")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "Updated"
    assert (body["pulled"], body["counted"], body["duplicates"], body["poison"]) == (253, 250, 2, 1)
    counters = totals(store, campaign_id)
    assert counters["click_count"] == 250
    per_platform = ("android_click_count", "iphone_click_count", "windowsphone_click_count")
    assert [counters[f] for f in per_platform] == [84, 83, 83]
    assert pull_all(project, subscription) == []  # everything acked


def test_two_drains_at_once_count_every_event_exactly_once(
    db: Any, store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str]
) -> None:
    topic, subscription = pubsub_names
    events = [click(campaign_id, "Android") for _ in range(1500)]
    publish(project, topic, [e.encode() for e in events] * 2)  # every event delivered twice
    results = []
    threads = [threading.Thread(target=lambda: results.append(drainer(db, project, subscription).drain()))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.counted for r, _ in results) == 1500
    assert sum(r.duplicates for r, _ in results) == 1500
    assert totals(store, campaign_id)["click_count"] == 1500
    assert pull_all(project, subscription) == []


def test_a_failed_commit_in_a_drain_hands_its_events_back_for_the_next_one(
    db: Any, store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str]
) -> None:
    topic, subscription = pubsub_names
    publish(project, topic, [click(campaign_id).encode() for _ in range(20)])
    result, pulled = drainer(FailingCommits(db, failures=1), project, subscription).drain()
    assert (pulled, result.counted, len(result.failed)) == (20, 0, 20)
    assert totals(store, campaign_id)["click_count"] == 0
    result, pulled = drainer(db, project, subscription).drain()
    assert (pulled, result.counted, result.duplicates) == (20, 20, 0)
    assert totals(store, campaign_id)["click_count"] == 20


class StaleFirstDedupRead:
    """Wraps the real client so the first dedup read sees no records: the interleaving in
    which another aggregator commits between this one's read and its commit. Threads
    cannot hit that window on demand, so the read is made stale here."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.stale_reads = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def get_all(self, refs: list[Any], **kwargs: Any) -> Any:
        if self.stale_reads and refs and refs[0].parent.id == "clicks":
            self.stale_reads -= 1
            return [type("Missing", (), {"id": ref.id, "exists": False})() for ref in refs]
        return self._db.get_all(refs, **kwargs)


def test_a_click_counted_by_another_aggregator_mid_fold_is_not_counted_again(
    db: Any, store: CampaignStore, campaign_id: int
) -> None:
    events = [click(campaign_id, "IPhone") for _ in range(10)]
    deliveries = [Delivery(e.click_id, e.encode()) for e in events]
    new_folder(db).fold(deliveries[:4])  # the other aggregator's commit
    racing = StaleFirstDedupRead(db)
    result = new_folder(racing).fold(deliveries)
    assert racing.stale_reads == 0  # the stale read happened and the create precondition caught it
    assert (result.counted, result.duplicates, len(result.acked)) == (6, 4, 10)
    assert totals(store, campaign_id)["click_count"] == 10
    assert totals(store, campaign_id)["iphone_click_count"] == 10


def test_each_commit_moves_every_campaign_to_the_next_counter_shard(
    folder: ClickFolder, store: CampaignStore, campaign_id: int
) -> None:
    others = [store.create({"redirect_url": "https://e.com/", "platforms": ["Android"]}).id for _ in range(7)]
    shards_used: dict[int, list[str]] = {i: [] for i in [campaign_id, *others]}
    for _ in range(SHARDS):  # as many commits as shards, each holding all eight campaigns
        events = [click(i) for i in shards_used]
        result = folder.fold([Delivery(e.click_id, e.encode()) for e in events])
        for path in result.writes:
            if "/counter_shards/" in path:
                shards_used[int(path.split("/")[1])].append(path.rsplit("/", 1)[1])
    for used in shards_used.values():
        assert sorted(used, key=int) == [str(k) for k in range(SHARDS)]  # every commit a different shard
    assert totals(store, campaign_id)["click_count"] == SHARDS


def test_a_drain_folds_several_small_pulls_as_one_batch(
    db: Any, store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str]
) -> None:
    topic, subscription = pubsub_names
    publish(project, topic, [click(campaign_id).encode() for _ in range(250)])  # the emulator pulls 100 at most
    result, pulled = drainer(db, project, subscription, batch_size=1000).drain()
    assert (pulled, result.counted) == (250, 250)
    assert len([path for path in result.writes if "/counter_shards/" in path]) == 1  # one commit for all


def subscription_retention() -> timedelta:
    """The longest message retention deploy.sh gives a subscription: how late a redelivery can come."""
    days = re.findall(r"--message-retention-duration=(\d+)d", (ROOT / "deploy.sh").read_text())
    assert days, "deploy.sh sets no message retention"
    return timedelta(days=max(map(int, days)))


@pytest.mark.parametrize("entry_point", ["aggregate_event", "aggregate_http"])
def test_dedup_records_outlive_every_redelivery_as_deployed(
    db: Any, campaign_id: int, project: str, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
    entry_point: str,
) -> None:
    monkeypatch.delenv("DEDUP_RETENTION_DAYS", raising=False)  # deploy.sh passes it only when set
    event = click(campaign_id)
    client = function_app("aggregate", entry_point).test_client()
    if entry_point == "aggregate_event":
        assert push(client, event.encode(), "m-retention").status_code == 200
    else:
        publish(project, pubsub_names[0], [event.encode()])
        assert client.post("/").get_json()["counted"] == 1
    record = db.collection("clicks").document(event.click_id).get().to_dict()
    kept_for = record["expire_at"] - datetime.now(timezone.utc)
    assert kept_for > subscription_retention()
    assert kept_for > timedelta(days=Settings().dedup_retention_days) - timedelta(minutes=5)


def test_a_drain_stops_at_its_time_budget_and_leaves_the_rest_for_the_next_run(
    db: Any, store: CampaignStore, campaign_id: int, project: str, pubsub_names: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backlog = 2000
    publish(project, pubsub_names[0], [click(campaign_id).encode() for _ in range(backlog)])
    # Batches of 10 make the whole backlog 200 commits, many seconds of work.
    monkeypatch.setenv("AGGREGATE_BATCH_SIZE", "10")
    monkeypatch.setenv("AGGREGATE_MAX_SECONDS", "0.2")
    drain = function_app("aggregate", "aggregate_http").test_client()
    started = time.monotonic()
    first = drain.post("/").get_json()
    elapsed = time.monotonic() - started
    assert first["status"] == "Updated"
    assert 0 < first["counted"] < backlog // 4, first
    assert elapsed < 5  # the budget plus the batch in flight, with a generous margin
    monkeypatch.setenv("AGGREGATE_MAX_SECONDS", "120")
    monkeypatch.setenv("AGGREGATE_BATCH_SIZE", "1000")
    rest = function_app("aggregate", "aggregate_http").test_client().post("/").get_json()
    assert first["counted"] + rest["counted"] == backlog
    assert totals(store, campaign_id)["click_count"] == backlog
    assert pull_all(project, pubsub_names[1]) == []
