"""The campaign store over the Firestore emulator: paging, read costs, shown totals, as_of, deferred delete,
and the refresh of what the sharded counters of the version before the journal left.

Reads are counted at the Firestore client's transport (bench/reads.py), as Firestore bills them.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aggregation import advance_as_of
from conftest import function_app
from helpers import push_cloud_event_headers, push_envelope
from legacy_counting import LegacyFolder
from legacy_totals import TotalsRefresher

from bench.reads import ReadCounter
from shared import store as store_module
from shared.config import Settings
from shared.counting import Applier, Delivery, Journal
from shared.errors import BadRequest, NotFound
from shared.events import ClickEvent, Producer
from shared.ids import keyed_ids
from shared.models import zero_counters
from shared.store import AS_OF, CampaignStore, campaign_ref, deletion_ref, new_campaign_document, read_as_of, state_ref
from shared.utc import hour_of

SHARDS = Settings().counter_shards
NOW = datetime.now(timezone.utc)
T0 = hour_of(NOW) - timedelta(hours=3) + timedelta(minutes=15)
HORIZON = timedelta(days=Settings().redelivery_horizon_days)
ALL = ["Android", "IPhone", "WindowsPhone"]
PRODUCER = Producer()
LONG_AGO = 10**9  # a deadline (monotonic) a run never reaches
LONG_BEFORE = datetime(2016, 4, 10, tzinfo=timezone.utc)  # a creation time older than any test's campaigns


@pytest.fixture
def store(db: Any) -> CampaignStore:
    return CampaignStore(db, SHARDS, keyed_ids(Settings.from_env()))


def new_campaign(store: CampaignStore, platforms: list[str] = ALL) -> int:
    return store.create({"redirect_url": "https://e.com/", "platforms": platforms}).id


def fold(db: Any, events: list[ClickEvent]) -> None:
    """Journal the events and apply them, as the scheduled run does with what it drained."""
    received = Journal(db).receive([Delivery(e.click_id, e.encode()) for e in events])
    assert received.failed == []
    Applier(db, HORIZON).apply(LONG_AGO)


def clicks(campaign_id: int, n: int, platform: str = "Android", at: datetime = T0) -> list[ClickEvent]:
    return [ClickEvent.new(campaign_id, platform, producer=PRODUCER, now=at) for _ in range(n)]


def legacy_fold(db: Any, events: list[ClickEvent]) -> None:
    LegacyFolder(db, SHARDS).fold(events)


def scheduled_run() -> dict[str, Any]:
    """One run of the scheduled aggregate function, as Cloud Scheduler triggers it."""
    answer = function_app("aggregate", "aggregate_http").test_client().post("/")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


@pytest.fixture
def event_mode(db: Any, project: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduled run as deploy.sh sets it up with AGGREGATE_MODE=event: no drain."""
    monkeypatch.setenv("AGGREGATE_MODE", "event")


def subcollection_documents(db: Any, campaign_id: int) -> list[str]:
    ref = campaign_ref(db, campaign_id)
    return [d.reference.path for c in ref.collections() for d in c.stream()]


def markers(db: Any, campaign_id: int) -> list[str]:
    return [d.id for d in db.collection("dirty").stream() if d.id.startswith(f"{campaign_id}-")]


# --- paging ------------------------------------------------------------------------------------


def test_pages_walk_every_campaign_newest_first_without_gaps_or_repeats(store: CampaignStore) -> None:
    ids = [new_campaign(store) for _ in range(25)]
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        page = store.list_page([], 10, cursor)
        seen += [c.id for c in page.campaigns]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert [c.id for c in store.stream([])] == seen
    exact = store.list_page([], 25, None)
    assert len(exact.campaigns) == 25 and exact.next_cursor is None  # no promise of an empty page


def test_the_platform_filter_keeps_campaigns_targeting_every_listed_platform(store: CampaignStore) -> None:
    both = new_campaign(store, ["Android", "IPhone"])
    android = new_campaign(store, ["Android"])
    windows = new_campaign(store, ["WindowsPhone"])

    def ids(platforms: list[str]) -> list[int]:
        return [c.id for c in store.stream(platforms)]

    assert ids(["Android"]) == [android, both]
    assert ids(["IPhone", "Android"]) == [both]
    assert ids(["IPhone", "WindowsPhone"]) == []
    first = store.list_page(["Android"], 1, None)
    assert [c.id for c in first.campaigns] == [android]
    assert [c.id for c in store.list_page(["Android"], 1, first.next_cursor).campaigns] == [both]
    store.update(windows, {"platforms": ["WindowsPhone", "Android"]})
    store.update(android, {"platforms": ["IPhone"]})
    assert ids(["Android"]) == [windows, both]
    assert ids(["IPhone"]) == [android, both]


def test_the_list_leaves_archived_campaigns_out_unless_asked_and_pages_through_a_status(
    db: Any, store: CampaignStore
) -> None:
    active, paused, archived, archived_ios = (new_campaign(store, p) for p in (ALL, ALL, ALL, ["IPhone"]))
    store.update(paused, {"status": "paused"})
    store.update(archived, {"status": "archived"})
    store.update(archived_ios, {"status": "archived"})

    def ids(platforms: list[str], *statuses: str) -> list[int]:
        return [c.id for c in store.stream(platforms, *([statuses] if statuses else []))]

    assert ids([]) == [paused, active]
    assert ids([], "archived") == [archived_ios, archived]
    assert ids([], "active", "archived") == [archived_ios, archived, active]
    assert ids(["IPhone"], "archived") == [archived_ios, archived]
    assert ids(["Android"], "archived", "paused") == [archived, paused]
    counter = ReadCounter(db)
    first = store.list_page([], 1, None, ["archived"])
    assert [c.id for c in first.campaigns] == [archived_ios] and counter.take() == 1 + 2  # the filter runs in Firestore
    assert [c.id for c in store.list_page([], 1, first.next_cursor, ["archived"]).campaigns] == [archived]
    store.update(archived, {"status": "active"})
    assert ids([]) == [archived, paused, active]


def test_a_date_changed_alone_is_checked_against_the_other_as_stored(store: CampaignStore) -> None:
    start, end = datetime(2026, 6, 1, tzinfo=timezone.utc), datetime(2026, 7, 1, tzinfo=timezone.utc)
    campaign = store.create({"redirect_url": "https://e.com/", "platforms": ["Android"], "starts_at": start})
    with pytest.raises(BadRequest, match="'ends_at' must be after 'starts_at' \\(2026-06-01T00:00:00.000000Z\\)"):
        store.update(campaign.id, {"ends_at": start})
    assert store.update(campaign.id, {"ends_at": end}).ends_at == end
    before = store.get(campaign.id)
    with pytest.raises(BadRequest, match="'ends_at' must be after 'starts_at'"):
        store.update(campaign.id, {"starts_at": end + timedelta(seconds=1), "status": "paused"})
    assert store.get(campaign.id) == before  # nothing written
    moved = store.update(campaign.id, {"starts_at": None})
    assert (moved.starts_at, moved.ends_at) == (None, end)
    with pytest.raises(NotFound):
        store.update(424242, {"ends_at": end})


def test_a_date_changed_alone_while_the_other_changes_is_checked_against_the_other_as_written(
    db: Any, store: CampaignStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = datetime(2026, 6, 1, tzinfo=timezone.utc)
    campaign = store.create({"redirect_url": "https://e.com/", "platforms": ["Android"]})
    read = CampaignStore._read_for_write

    def read_then_start_later(self: CampaignStore, campaign_id: int) -> Any:
        """Another edit commits its start between this edit's read and its write."""
        snapshot = read(self, campaign_id)
        campaign_ref(db, campaign_id).update({"starts_at": start + timedelta(days=60)})
        return snapshot

    monkeypatch.setattr(CampaignStore, "_read_for_write", read_then_start_later)
    with pytest.raises(BadRequest, match="'ends_at' must be after 'starts_at' \\(2026-07-31T00:00:00.000000Z\\)"):
        store.update(campaign.id, {"ends_at": start + timedelta(days=30)})
    assert store.get(campaign.id).ends_at is None


@pytest.mark.parametrize("cursor", ["", "%%%", "bm90IGpzb24", "WzEsMl0", "WyJ4IiwgMV0", "WyIyMDI2LTAxLTAxIiwgMV0"])
def test_a_malformed_cursor_is_a_bad_request(store: CampaignStore, cursor: str) -> None:
    with pytest.raises(BadRequest, match="cursor"):
        store.list_page([], 10, cursor)


def test_a_page_costs_a_read_per_campaign_and_one_campaign_two(db: Any, store: CampaignStore) -> None:
    ids = [new_campaign(store, ["Android"] if i % 2 else ALL) for i in range(40)]
    fold(db, [e for i in ids[:5] for e in clicks(i, 3)])
    counter = ReadCounter(db)
    page = store.list_page([], 10, None)
    assert len(page.campaigns) == 10 and counter.take() == 10 + 2  # one more to know of a next page; as_of
    page = store.list_page(["IPhone"], 10, page.next_cursor)
    assert len(page.campaigns) == 10 and counter.take() == 10 + 2
    assert len(list(store.stream([]))) == 40 and counter.take() == 40 + 1
    store.get(ids[0])
    assert counter.take() == 2


def test_every_campaign_streams_in_order_though_reading_it_outlasts_a_call_deadline(
    db: Any, store: CampaignStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(timezone.utc)
    batch = db.batch()
    for n in range(400):  # some 3 MB: more than the client takes in before it is read
        values = {"redirect_url": f"https://e.example/{n}?" + "q" * 2000, "platforms": ALL,
                  "platform_urls": {p: f"https://{p}.example/?" + "q" * 2000 for p in ALL}}
        batch.set(campaign_ref(db, 1_000_000 + n), new_campaign_document(values, now - timedelta(seconds=n)))
        if n % 100 == 99:
            batch.commit()
            batch = db.batch()
    monkeypatch.setattr(store_module, "REQUEST_TIMEOUT_SECONDS", 1.0)
    streamed = []
    for campaign in store.stream([]):
        if not streamed:
            time.sleep(2)  # a slow reader: the call's deadline passes while the rest waits
        streamed.append(campaign.id)
    assert streamed == [1_000_000 + n for n in range(400)]


# --- totals, as_of -----------------------------------------------------------------------------


def test_the_scheduled_run_adds_what_the_sharded_counters_left_and_moves_as_of_to_its_start(
    db: Any, store: CampaignStore, project: str, pubsub_names: tuple[str, str]
) -> None:
    campaign_id = new_campaign(store)
    assert store.get(campaign_id).as_of is None  # nothing counted yet
    folder = LegacyFolder(db, SHARDS)
    folder.fold(clicks(campaign_id, 3) + clicks(campaign_id, 2, "IPhone"))  # left marked by the version before
    folder.fold(clicks(campaign_id, 4, "WindowsPhone"))  # another commit: another shard
    fold(db, clicks(campaign_id, 6, "IPhone"))  # counted through the journal
    assert store.get(campaign_id).counters["click_count"] == 6  # the legacy shards not refreshed yet
    before = datetime.now(timezone.utc)
    body = scheduled_run()
    after = datetime.now(timezone.utc)
    assert body["totals_refreshed"] == 1 and body["totals_complete"] is True
    campaign = store.get(campaign_id)
    assert campaign.counters == {**zero_counters(), "click_count": 15, "android_click_count": 3,
                                 "iphone_click_count": 8, "windowsphone_click_count": 4, "bot_click_count": 0}
    assert campaign.as_of is not None and before <= campaign.as_of <= after
    assert campaign.to_json()["as_of"] == body["as_of"]
    assert store.as_of() == campaign.as_of
    assert markers(db, campaign_id) == []
    assert scheduled_run()["totals_refreshed"] == 0  # nothing changed: nothing written
    assert sum(store.hourly(campaign_id, T0 - timedelta(hours=1), NOW).counts.get(hour_of(T0), {}).values()) == 2 * 15


def test_the_push_path_counts_each_event_at_once(db: Any, store: CampaignStore, event_mode: None) -> None:
    campaign_id = new_campaign(store)
    push = function_app("aggregate", "aggregate_event").test_client()
    for i, event in enumerate(clicks(campaign_id, 5, "IPhone")):
        envelope, headers = push_envelope(event.encode(), f"m-{i}"), push_cloud_event_headers(f"m-{i}")
        assert push.post("/", json=envelope, headers=headers).status_code == 200
        assert store.get(campaign_id).counters["iphone_click_count"] == i + 1
    body = scheduled_run()
    assert body["pulled"] == 0 and body["as_of"] is not None  # event mode: no drain


def test_legacy_totals_are_written_once_per_campaign_per_run_however_many_shards_changed(
    db: Any, store: CampaignStore
) -> None:
    ids = [new_campaign(store) for _ in range(30)]
    folder = LegacyFolder(db, SHARDS)
    for _ in range(SHARDS):  # every campaign on every shard: each commit moves to the next shard
        folder.fold([e for i in ids for e in clicks(i, 1)])
    refresher = TotalsRefresher(db, SHARDS)
    result = refresher.refresh(LONG_AGO)
    assert (result.campaigns, result.markers, result.complete) == (30, 30 * SHARDS, True)
    assert {c.counters["click_count"] for c in store.stream([])} == {SHARDS}


class CommitAfterSnapshot:
    """Wraps the real client so that right after the refresh's consistent read, a fold commits
    more clicks: the interleaving of a fold with a refresh, which threads cannot hit on demand."""

    def __init__(self, db: Any, late: list[ClickEvent]) -> None:
        self._db = db
        self.late = late

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def get_all(self, refs: list[Any], **kwargs: Any) -> Any:
        snapshots = list(self._db.get_all(refs, **kwargs))
        if self.late:
            legacy_fold(self._db, self.late)
            self.late = []
        return snapshots


def test_a_commit_after_the_refresh_read_stays_marked_for_the_next_run(db: Any, store: CampaignStore) -> None:
    campaign_id = new_campaign(store)
    legacy_fold(db, clicks(campaign_id, 2))
    racing = CommitAfterSnapshot(db, clicks(campaign_id, 3))
    TotalsRefresher(racing, SHARDS).refresh(LONG_AGO)
    assert racing.late == []  # the late commit happened
    assert store.get(campaign_id).counters["click_count"] == 2  # the snapshot's sum
    assert markers(db, campaign_id) != []  # the late commit's marker survived the refresh
    TotalsRefresher(db, SHARDS).refresh(LONG_AGO)
    assert store.get(campaign_id).counters["click_count"] == 5
    assert markers(db, campaign_id) == []


class RefreshAfterSnapshot(CommitAfterSnapshot):
    """As CommitAfterSnapshot, then another run refreshes before this one writes: two scheduled
    runs interleaved so that the slower one holds the older sum."""

    def get_all(self, refs: list[Any], **kwargs: Any) -> Any:
        snapshots = list(self._db.get_all(refs, **kwargs))
        if self.late:
            legacy_fold(self._db, self.late)
            self.late = []
            TotalsRefresher(self._db, SHARDS).refresh(LONG_AGO)
        return snapshots


def test_a_run_holding_an_older_sum_never_writes_it_over_a_newer_one(db: Any, store: CampaignStore) -> None:
    campaign_id = new_campaign(store)
    legacy_fold(db, clicks(campaign_id, 2))
    slow = RefreshAfterSnapshot(db, clicks(campaign_id, 3))
    result = TotalsRefresher(slow, SHARDS).refresh(LONG_AGO)
    assert slow.late == []  # the other run refreshed between this one's read and its write
    assert store.get(campaign_id).counters["click_count"] == 5  # the newer sum stayed
    assert result.complete and markers(db, campaign_id) == []


def test_legacy_totals_never_go_down_and_as_of_waits_for_a_complete_refresh(
    db: Any, store: CampaignStore, event_mode: None, caplog: pytest.LogCaptureFixture
) -> None:
    campaign_id = new_campaign(store)
    legacy_fold(db, clicks(campaign_id, 5))
    first = scheduled_run()
    for shard in campaign_ref(db, campaign_id).collection("counter_shards").stream():
        shard.reference.delete()  # as if COUNTER_SHARDS had been lowered: the shards now sum lower
    legacy_fold(db, clicks(campaign_id, 1))
    with caplog.at_level(logging.ERROR):
        second = scheduled_run()
    assert second["totals_complete"] is False and second["as_of"] == first["as_of"]
    assert store.get(campaign_id).counters["click_count"] == 5
    assert any("below what is shown" in r.getMessage() for r in caplog.records)


def test_as_of_only_moves_forward(db: Any) -> None:
    later = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
    assert advance_as_of(db, later, 0, 1) == later
    assert advance_as_of(db, later - timedelta(minutes=1), 0, 1) == later
    assert advance_as_of(db, later + timedelta(seconds=1), 0, 1) == later + timedelta(seconds=1)


def test_as_of_is_the_earliest_partitions_mark_once_each_has_one(db: Any) -> None:
    start = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
    state_ref(db).create({AS_OF: start})  # from before partitions
    minute = timedelta(minutes=1)
    assert advance_as_of(db, start + 3 * minute, 1, 3) == start  # partitions 0 and 2 have not run yet
    assert advance_as_of(db, start + 2 * minute, 0, 3) == start
    assert advance_as_of(db, start + 5 * minute, 2, 3) == start + 2 * minute  # partition 0's is the earliest
    assert advance_as_of(db, start + 6 * minute, 0, 3) == start + 3 * minute  # now partition 1's
    assert read_as_of(db) == start + 3 * minute
    assert advance_as_of(db, start + 4 * minute, 1, 3) == start + 4 * minute


# --- hourly ------------------------------------------------------------------------------------


def test_hourly_shows_the_counted_hours_in_range(db: Any, store: CampaignStore) -> None:
    campaign_id = new_campaign(store)
    late = hour_of(NOW).replace(hour=0) - timedelta(minutes=90)  # 22:30 yesterday
    batches = [clicks(campaign_id, offset + 1, at=late + timedelta(hours=offset)) for offset in range(5)]
    batches.append(clicks(campaign_id, 10, "IPhone", at=late + timedelta(hours=1)))
    for events in batches:  # one journal entry each, across midnight
        fold(db, events)
    hour = late.replace(minute=0)
    series = store.hourly(campaign_id, hour + timedelta(hours=1), hour + timedelta(hours=4)).counts
    assert list(series) == [hour + timedelta(hours=h) for h in (1, 2, 3)]  # 23:00, then the next day
    assert [c["click_count"] for c in series.values()] == [12, 3, 4]
    assert series[hour + timedelta(hours=1)]["iphone_click_count"] == 10
    assert store.hourly(campaign_id, hour - timedelta(days=1), hour).counts == {}
    naive = hour.replace(tzinfo=None)  # taken as UTC
    assert store.hourly(campaign_id, naive + timedelta(hours=1), naive + timedelta(hours=4)).counts == series
    fold(db, clicks(campaign_id, 7, "WindowsPhone", at=late + timedelta(hours=2)))  # a later click in a shown hour
    assert store.hourly(campaign_id, hour + timedelta(hours=2), hour + timedelta(hours=3)).counts[
        hour + timedelta(hours=2)]["windowsphone_click_count"] == 7
    counter = ReadCounter(db)
    store.hourly(campaign_id, hour - timedelta(days=30), hour + timedelta(hours=5))
    assert counter.take() == 1 + 2  # the campaign, then one document per day that had clicks
    with pytest.raises(NotFound):
        store.hourly(123456789, hour, hour + timedelta(hours=1))


# --- deferred delete ---------------------------------------------------------------------------


@pytest.fixture
def sweep_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELETE_GRACE_SECONDS", "0.001")


def test_delete_answers_at_once_and_a_later_run_sweeps_counters_and_buckets(
    db: Any, store: CampaignStore, event_mode: None, sweep_now: None
) -> None:
    campaign_id, kept = new_campaign(store), new_campaign(store)
    for offset in range(3):
        legacy_fold(db, clicks(campaign_id, 2, at=T0 + timedelta(hours=offset)) + clicks(kept, 1))
        fold(db, clicks(campaign_id, 2, at=T0 + timedelta(hours=offset)) + clicks(kept, 1))
    assert subcollection_documents(db, campaign_id) and markers(db, campaign_id)
    counter = ReadCounter(db)
    store.delete(campaign_id)
    assert counter.take() == 0  # one write, whatever the campaign holds
    assert deletion_ref(db, campaign_id).get().exists
    with pytest.raises(NotFound):
        store.delete(campaign_id)  # a retried delete changes nothing
    body = scheduled_run()
    assert body["deletions_done"] == 1
    assert subcollection_documents(db, campaign_id) == []  # counter shards and hourly buckets
    assert markers(db, campaign_id) == []
    assert not deletion_ref(db, campaign_id).get().exists
    assert store.get(kept).counters["click_count"] == 6 and subcollection_documents(db, kept)
    assert scheduled_run()["deleted_documents"] == 0  # a second run has nothing left to do


def test_a_sweep_cut_short_is_finished_by_the_next_runs(
    db: Any, store: CampaignStore, event_mode: None, sweep_now: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELETE_MAX_DOCUMENTS", "7")
    campaign_id = new_campaign(store)
    folder = LegacyFolder(db, SHARDS)
    for offset in range(12):  # a shard, a bucket and a marker each
        folder.fold(clicks(campaign_id, 1, at=T0 - timedelta(hours=offset)))
    store.delete(campaign_id)
    runs = []
    for _ in range(10):
        runs.append(scheduled_run())
        if runs[-1]["deletions_done"]:
            break
    assert len(runs) > 2 and all(r["deleted_documents"] <= 7 for r in runs)
    assert subcollection_documents(db, campaign_id) == [] and markers(db, campaign_id) == []
    assert not deletion_ref(db, campaign_id).get().exists


def test_late_clicks_for_a_deleted_campaign_stay_poison_and_never_resurrect_counters(
    db: Any, store: CampaignStore, event_mode: None, sweep_now: None
) -> None:
    campaign_id = new_campaign(store)
    fold(db, clicks(campaign_id, 2))
    store.delete(campaign_id)
    for _ in range(2):  # before the sweep, and after it
        Journal(db).receive([Delivery(e.click_id, e.encode()) for e in clicks(campaign_id, 3)])
        late = Applier(db, HORIZON).apply(LONG_AGO)
        assert (late.counted, late.poison) == (0, 3)
        scheduled_run()
    assert not campaign_ref(db, campaign_id).get().exists
    assert subcollection_documents(db, campaign_id) == [] and markers(db, campaign_id) == []


def test_a_recent_deletion_waits_for_the_grace_period(db: Any, store: CampaignStore, event_mode: None) -> None:
    campaign_id = new_campaign(store)
    fold(db, clicks(campaign_id, 2))
    store.delete(campaign_id)
    assert scheduled_run()["deleted_documents"] == 0  # default grace: ten minutes
    assert subcollection_documents(db, campaign_id) and deletion_ref(db, campaign_id).get().exists


def test_an_id_awaiting_cleanup_is_never_given_to_a_new_campaign(
    db: Any, store: CampaignStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    deleted = new_campaign(store)
    fold(db, clicks(deleted, 2))
    store.delete(deleted)
    fresh = store.ids.issue()
    draws = iter([deleted, fresh])
    monkeypatch.setattr(store.ids, "issue", lambda: next(draws))
    assert store.create({"redirect_url": "https://e.com/", "platforms": ["Android"]}).id == fresh
    assert not campaign_ref(db, deleted).get().exists


def test_campaigns_written_before_the_filter_fields_are_backfilled_for_the_list(
    db: Any, store: CampaignStore, event_mode: None
) -> None:
    old = []
    for i, platforms in enumerate([["Android"], ["Android", "IPhone"], ["IPhone"]]):
        old.append(10_000 + i)
        now = datetime.now(timezone.utc)
        campaign_ref(db, old[-1]).set({"redirect_url": "https://e.com/", "platforms": platforms,
                                       "platform_urls": {}, "created_at": now, "updated_at": now})
    # one that the targets-only backfill of the version before had given its map
    campaign_ref(db, old[0]).update({"targets": {"Android": True}})
    db.document("aggregator/state").set({"targets_backfill": {"done": True}})
    new = new_campaign(store, ["Android"])
    assert [c.id for c in store.stream([])] == [new]
    assert [c.id for c in store.stream([], ["active", "paused", "archived"])] == \
        [new, *old[::-1]]  # asked for every status, the list does not filter on it
    batch = db.batch()
    for filler in range(20_000, 20_400):  # so that one run walks two pages
        batch.set(campaign_ref(db, filler), {"redirect_url": "https://e.com/", "platforms": ["IPhone"],
                                             "created_at": LONG_BEFORE, "updated_at": LONG_BEFORE})
    batch.commit()
    assert scheduled_run()["campaigns_backfilled"] == 403
    assert [c.id for c in store.stream([])][:4] == [new, *old[::-1]]
    assert [c.id for c in store.stream(["Android"])] == [new, old[1], old[0]]
    assert [c.id for c in store.stream(["IPhone"])][:2] == [old[2], old[1]]
    assert {store.get(i).status for i in old} == {"active"}
    assert scheduled_run()["campaigns_backfilled"] == 0  # done once
