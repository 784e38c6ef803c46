"""Distinct visitors: the apply step's sketches over the Firestore emulator, their accuracy at 100,000
visitors as the stats API answers them, racing appliers, and the salts the scheduled run makes."""

from __future__ import annotations

import json
import random
import zlib
from datetime import datetime, time, timedelta, timezone
from typing import Any

import pytest
from conftest import function_app
from datasketches import hll_sketch

from shared.config import Settings
from shared.counting import Applier, Delivery, Journal, Row, new_entry_id
from shared.events import ClickEvent, Producer
from shared.ids import keyed_ids
from shared.sketches import LG_K, VisitorUnion
from shared.store import DOCUMENT_NAME, CampaignStore

# Clicks on fixed past dates: counted with a horizon that reaches them.
HORIZON = timedelta(days=3650)
START = datetime(2026, 11, 2, tzinfo=timezone.utc)
HOURS = 48
LONG_AGO = 10**9  # a deadline (monotonic) an apply never reaches
PLATFORMS = ("Android", "IPhone", "WindowsPhone")
TOLERANCE = 0.03


@pytest.fixture
def store(db: Any) -> CampaignStore:
    return CampaignStore(db, Settings().counter_shards, keyed_ids(Settings.from_env()))


@pytest.fixture
def admin(db: Any, admin_env: tuple[str, str]) -> Any:
    client = function_app("admin", "admin").test_client()
    auth = {"Authorization": "Basic YWRtaW46czNjcmV0LVBhc3M="}  # admin_env's admin:s3cret-Pass

    def stats(campaign_id: int, **query: str) -> dict[str, Any]:
        answer = client.get(f"/admin/campaigns/{campaign_id}/stats", query_string=query, headers=auth)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        body: dict[str, Any] = answer.get_json()
        return body

    return stats


def new_campaign(store: CampaignStore) -> int:
    return store.create({"redirect_url": "https://e.com/", "platforms": list(PLATFORMS)}).id


def journal(db: Any, events: list[ClickEvent], batch: int = 1000) -> None:
    """Journal the events in batches, as the drain writes what it pulls."""
    for i in range(0, len(events), batch):
        received = Journal(db).receive([Delivery(e.click_id, e.encode()) for e in events[i:i + batch]])
        assert received.failed == []


def key(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def within(shown: int, truth: int) -> bool:
    return abs(shown - truth) <= TOLERANCE * truth


def test_a_hundred_thousand_visitors_are_counted_within_three_percent_in_every_bucket_and_zone(
    db: Any, store: CampaignStore, admin: Any
) -> None:
    rng = random.Random(15)
    campaigns = [new_campaign(store) for _ in range(4)]
    producers = [Producer() for _ in range(8)]
    clicks: list[tuple[datetime, int, str, str]] = []  # (ts, campaign, platform, visitor)
    visitors: set[str] = set()
    while len(visitors) < 100_000:
        visitor = key(rng)
        if visitor in visitors:
            continue
        visitors.add(visitor)
        # Skewed: the first campaign gets half the visitors.
        campaign = campaigns[0] if rng.random() < 0.5 else rng.choice(campaigns[1:])
        first = START + timedelta(seconds=rng.uniform(0, HOURS * 3600))
        clicks.append((first, campaign, rng.choice(PLATFORMS), visitor))
        if rng.random() < 0.3:  # a visitor who comes back the same UTC day, maybe on another platform
            day_start = datetime.combine(first.date(), time(), timezone.utc)
            again = day_start + timedelta(seconds=rng.uniform(0, 86_399))
            clicks.append((again, campaign, rng.choice(PLATFORMS), visitor))
    clicks.sort()  # as traffic arrives
    journal(db, [ClickEvent.new(c, p, producer=rng.choice(producers), now=ts, visitor=v) for ts, c, p, v in clicks])
    applied = Applier(db, HORIZON).apply(LONG_AGO)
    assert applied.complete and applied.counted == len(clicks)

    def truth(campaign: int, start: datetime, end: datetime) -> set[str]:
        return {v for ts, c, _, v in clicks if c == campaign and start <= ts < end}

    figures = 0
    for campaign in campaigns:
        for query in ({"granularity": "hour", "tz": "UTC"}, {"granularity": "day", "tz": "UTC"},
                      {"granularity": "day", "tz": "America/New_York"}, {"granularity": "day", "tz": "Asia/Kolkata"}):
            stats = admin(campaign, **{"from": "2026-11-01T12:00Z", "to": "2026-11-04T12:00Z", **query})
            for bucket in stats["buckets"]:
                start, end = datetime.fromisoformat(bucket["start"]), datetime.fromisoformat(bucket["end"])
                expected = len(truth(campaign, start, end))
                assert within(bucket["unique_visitors"], expected), (query, bucket, expected)
                figures += 1
            whole = truth(campaign, datetime.fromisoformat(stats["from"]), datetime.fromisoformat(stats["to"]))
            direct = hll_sketch(LG_K)  # one sketch fed the range's visitors directly, not a union of hours
            for visitor in whole:
                direct.update(visitor)
            union_of_hours = stats["totals"]["unique_visitors"]
            assert within(union_of_hours, len(whole)) and within(union_of_hours, round(direct.get_estimate())), (
                query, union_of_hours, len(whole), direct.get_estimate())
            if query["granularity"] == "hour":  # visitors who came back in another hour count once
                assert union_of_hours < 0.9 * sum(b["unique_visitors"] for b in stats["buckets"])
            figures += 1
    assert figures > 4 * (HOURS + 6)


def visitors_shown(store: CampaignStore, campaign: int) -> int:
    """The campaign's distinct visitors on START's day, from the sketches the stats read."""
    hourly = store.hourly(campaign, START, START + timedelta(days=1))
    union = VisitorUnion()
    for sketches in hourly.visitors.values():
        for sketch in sketches.values():
            union.add(sketch)
    return union.estimate()


@pytest.mark.parametrize("day_exists", [False, True], ids=["new day", "day already counted"])
def test_two_appliers_racing_on_one_day_lose_no_visitor(db: Any, store: CampaignStore, day_exists: bool) -> None:
    rng = random.Random(7)
    campaign = new_campaign(store)
    at = START + timedelta(hours=5, minutes=10)
    if day_exists:
        journal(db, [ClickEvent.new(campaign, "Android", producer=Producer(), now=at, visitor=key(rng))])
        Applier(db, HORIZON).apply(LONG_AGO)
    for producer in (Producer(), Producer()):  # two entries, of one hour and platform, with no ledger in common
        journal(db, [ClickEvent.new(campaign, "Android", producer=producer, now=at, visitor=key(rng))
                     for _ in range(50)])
    first_entry, second_entry = db.collection("journal").order_by(DOCUMENT_NAME).stream()
    first, second = Applier(db, HORIZON), Applier(db, HORIZON)
    raced: list[Any] = []
    read_days = first._days

    def the_other_commits_meanwhile(visitors: Any) -> Any:
        snapshots = read_days(visitors)
        if not raced:  # between the first applier's read of the day and its commit
            raced.append(second.apply_entries([second_entry]))
        return snapshots

    first._days = the_other_commits_meanwhile
    assert first.apply_entries([first_entry]).counted == 50 and raced[0].counted == 50
    assert visitors_shown(store, campaign) == 100 + day_exists  # the first rereads, and adds to what the second wrote
    assert store.get(campaign).counters["android_click_count"] == 100 + day_exists


def test_entries_journaled_before_visitor_keys_still_count(db: Any, store: CampaignStore) -> None:
    campaign, producer = new_campaign(store), Producer()
    at = START + timedelta(hours=1)
    # Rows as the journal wrote them before visitor keys: no last element.
    rows = [[producer.id, seq, "", campaign, "IPhone", False, int(at.timestamp())] for seq in (1, 2, 3)]
    db.collection("journal").document(new_entry_id(0)).create(
        {"events": zlib.compress(json.dumps(rows).encode()), "count": 3, "footprint": 3})
    applied = Applier(db, HORIZON).apply(LONG_AGO)
    assert (applied.entries, applied.counted, applied.complete) == (1, 3, True)
    assert visitors_shown(store, campaign) == 0
    # Then a click with a key, into the day those made: its first sketch.
    journal(db, [ClickEvent.new(campaign, "IPhone", producer=Producer(), now=at, visitor="0123456789abcdef")])
    assert Applier(db, HORIZON).apply(LONG_AGO).counted == 1
    assert store.hourly(campaign, START, START + timedelta(days=1)).counts[at]["iphone_click_count"] == 4
    assert visitors_shown(store, campaign) == 1


def test_a_visitor_in_several_hours_and_platforms_of_a_day_is_one_bots_and_inactive_clicks_none(
    db: Any, store: CampaignStore
) -> None:
    campaign, producer = new_campaign(store), Producer()
    events = [ClickEvent.new(campaign, platform, producer=producer, now=START + timedelta(hours=hour), visitor=visitor)
              for visitor, platform, hour in (("a" * 16, "Android", 1), ("a" * 16, "IPhone", 7),
                                              ("a" * 16, "Android", 1), ("b" * 16, "Android", 1))]
    events.append(ClickEvent.new(campaign, "Android", producer=producer, now=START, bot=True, visitor="c" * 16))
    events.append(ClickEvent.new(campaign, "Android", producer=producer, now=START, inactive=True, visitor="d" * 16))
    journal(db, events)
    Applier(db, HORIZON).apply(LONG_AGO)
    assert visitors_shown(store, campaign) == 2
    # A campaign, a day and a producer, and two sketches (Android at 01:00, iPhone at 07:00): none for the
    # bot or the inactive click.
    assert len({key for event in events for key in Row.of(event).touches()}) == 1 + 1 + 1 + 2


def test_each_run_makes_todays_and_tomorrows_salt_and_never_replaces_one(
    db: Any, pubsub_names: tuple[str, str]
) -> None:
    def run() -> dict[str, Any]:
        answer = function_app("aggregate", "aggregate_http").test_client().post("/")  # a new instance each time
        assert answer.status_code == 200
        body: dict[str, Any] = answer.get_json()
        return body

    assert run()["visitor_salts_made"] == 2
    today = datetime.now(timezone.utc).date()
    days = [today, today + timedelta(days=1)]
    salts = {snapshot.id: snapshot.to_dict() for snapshot in db.collection("salts").stream()}
    assert sorted(salts) == [f"{day:%Y%m%d}" for day in days]
    for day in days:
        salt = salts[f"{day:%Y%m%d}"]
        assert isinstance(salt["salt"], bytes) and len(salt["salt"]) == 32
        assert salt["expire_at"] == datetime.combine(day, time(), timezone.utc) + timedelta(days=2)
    assert salts[f"{today:%Y%m%d}"]["salt"] != salts[f"{days[1]:%Y%m%d}"]["salt"]
    assert run()["visitor_salts_made"] == 0
    assert {snapshot.id: snapshot.to_dict() for snapshot in db.collection("salts").stream()} == salts
