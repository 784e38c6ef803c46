"""Partitions of the click stream, through the track and aggregate functions as deployed.

The Pub/Sub emulator ignores subscription filters, so here every partition's
subscription receives every click, as an unfiltered subscription would: each
partition's drain journals its own and acks the rest.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aggregation import advance_as_of
from conftest import function_app
from helpers import Track, pull_all, serve_track

from local import emulators
from shared.config import Settings
from shared.counting import Applier, Delivery, Journal
from shared.events import ClickEvent, Producer, split_events
from shared.ids import keyed_ids
from shared.partitions import PARTITION_ATTRIBUTE, partition_of, subscription_of
from shared.store import JOURNAL, PARTITIONS_AS_OF, CampaignStore, read_as_of, state_ref

PARTITIONS = 3


@pytest.fixture
def store(db: Any) -> CampaignStore:
    settings = Settings.from_env()
    return CampaignStore(db, settings.counter_shards, keyed_ids(settings))


@pytest.fixture
def campaign_id(store: CampaignStore) -> int:
    return store.create({"redirect_url": "https://e.com/", "platforms": ["Android", "IPhone"]}).id


@pytest.fixture
def partitioned(project: str, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``AGGREGATE_PARTITIONS`` set for every function, and each partition's subscription as deploy.sh makes it."""
    monkeypatch.setenv("AGGREGATE_PARTITIONS", str(PARTITIONS))
    topic, base = pubsub_names
    subscriptions = [subscription_of(base, partition) for partition in range(PARTITIONS)]
    for subscription in subscriptions[1:]:
        emulators.create_topic_and_subscription(project, topic, subscription)
    return subscriptions


@pytest.fixture
def track(db: Any, partitioned: list[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Track]:
    monkeypatch.setenv("PUBLISH_WAIT_SECONDS", "10")  # every click confirmed before its messages are pulled
    with serve_track() as track:
        yield track


def scheduled_run(partition: str) -> tuple[int, dict[str, Any]]:
    answer = function_app("aggregate", "aggregate_http").test_client().post(f"/?partition={partition}")
    return answer.status_code, answer.get_json()


def test_a_track_worker_spreads_its_clicks_evenly_each_producer_in_one_partition(
    track: Track, campaign_id: int, project: str, partitioned: list[str]
) -> None:
    for _ in range(4 * PARTITIONS):
        assert track.click(f"/track/{campaign_id}?platform=Android").status_code == 307
    tagged = [(ClickEvent.decode(data), int(m.message.attributes[PARTITION_ATTRIBUTE]))
              for m in pull_all(project, partitioned[0]) for data in split_events(m.message.data)]
    assert Counter(partition for _, partition in tagged) == {partition: 4 for partition in range(PARTITIONS)}
    producers = {event.producer: partition for event, partition in tagged}
    assert len(producers) == PARTITIONS  # one producer per partition, each message tagged with its producer's
    assert all(partition_of(producer, PARTITIONS) == tagged for producer, tagged in producers.items())


def test_each_partition_counts_its_own_clicks_and_as_of_waits_for_the_slowest(
    track: Track, store: CampaignStore, campaign_id: int
) -> None:
    for _ in range(2 * PARTITIONS):
        assert track.click(f"/track/{campaign_id}?platform=IPhone").status_code == 307
    before = datetime.now(timezone.utc)
    counted = []
    for partition in (2, 1):
        status, body = scheduled_run(str(partition))
        assert status == 200, body
        assert (body["partition"], body["counted"], body["foreign"]) == (partition, 2, 2 * PARTITIONS - 2)
        assert body["as_of"] is None  # partition 0 has not run: nothing is known of its clicks
        counted.append(store.get(campaign_id).counters["click_count"])
    assert counted == [2, 4]
    time.sleep(0.01)
    status, body = scheduled_run("0")
    assert status == 200 and body["counted"] == 2, body
    assert store.get(campaign_id).counters["iphone_click_count"] == 2 * PARTITIONS
    # as_of is partition 2's start, the earliest of the three: every click before it is counted.
    assert before < datetime.fromisoformat(body["as_of"]) < datetime.now(timezone.utc)

    for partition in range(PARTITIONS):  # nothing left anywhere, nothing counted twice
        status, body = scheduled_run(str(partition))
        assert (status, body["pulled"], body["counted"]) == (200, 0, 0)
    assert store.get(campaign_id).counters["click_count"] == 2 * PARTITIONS


@pytest.mark.parametrize("partition", [str(PARTITIONS), "-1", "x", "", "²"])
def test_a_run_of_an_unknown_partition_is_refused(partitioned: list[str], partition: str) -> None:
    status, body = scheduled_run(partition)
    assert status == 400 and "AGGREGATE_PARTITIONS" in body["msg"], body


def test_each_partitions_apply_step_takes_its_own_journal_entries_and_0_those_from_before(
    db: Any, store: CampaignStore, campaign_id: int
) -> None:
    producers = [Producer() for _ in range(3)]
    for partition, producer in enumerate(producers[:2]):
        event = ClickEvent.new(campaign_id, "Android", producer=producer)
        assert Journal(db, partition=partition).receive([Delivery("m", event.encode())]).journaled == 1
    before_partitions = ClickEvent.new(campaign_id, "Android", producer=producers[2])
    entry = Journal(db).receive([Delivery("m", before_partitions.encode())]).written[0].reference
    # As the version before partitions named its entries: by time alone.
    db.collection(JOURNAL).document(f"{time.time_ns():020d}-0badcafe").create(entry.get().to_dict())
    entry.delete()
    applier = Applier(db, timedelta(days=Settings().redelivery_horizon_days))
    deadline = time.monotonic() + 30
    assert applier.apply(deadline, partition=1).counted == 1
    assert store.get(campaign_id).counters["click_count"] == 1
    assert applier.apply(deadline, partition=0).counted == 2
    assert list(db.collection(JOURNAL).stream()) == []


def test_every_partitions_as_of_is_recorded_when_all_their_runs_end_at_once(db: Any) -> None:
    partitions = 12
    start = datetime.now(timezone.utc)
    moments = [start + timedelta(seconds=n) for n in range(partitions)]
    with ThreadPoolExecutor(partitions) as pool:
        list(pool.map(lambda n: advance_as_of(db, moments[n], n, partitions), range(partitions)))
    state = state_ref(db).get().to_dict()
    assert state[PARTITIONS_AS_OF] == {str(n): moments[n] for n in range(partitions)}
    assert read_as_of(db) == start
