"""The pure parts of counting: a producer's ledger of counted numbers, journal rows, entry sizes."""

from __future__ import annotations

import json
import random
import zlib
from datetime import datetime, timedelta, timezone

from shared.counting import MAX_SKETCHES_PER_COMMIT, SKETCH, Ledger, Row, _entries, grouped_by_writes, pack, unpack
from shared.events import ClickEvent, Producer
from shared.sketches import MAX_SKETCH_BYTES
from shared.store import MAX_WRITES_PER_COMMIT

T = 1_800_000_000  # an epoch second


def test_numbers_added_in_any_order_merge_into_ranges() -> None:
    ledger = Ledger()
    order = list(range(1, 101))
    random.Random(7).shuffle(order)
    for seq in order[:60]:
        assert seq not in ledger
        ledger.add(seq, T + seq)
        assert seq in ledger
    for seq in order[60:]:
        ledger.add(seq, T + seq)
    assert ledger.ranges == [[1, 100, T + 1]]  # one range, keeping the ts of its lowest number
    assert ledger.newest == T + 100
    assert 0 not in ledger and 101 not in ledger


def test_a_gap_stays_a_gap_until_filled() -> None:
    ledger = Ledger()
    for seq in (1, 2, 3, 7, 8):
        ledger.add(seq, T + seq)
    assert ledger.ranges == [[1, 3, T + 1], [7, 8, T + 7]]
    assert [seq in ledger for seq in range(1, 10)] == [True] * 3 + [False] * 3 + [True] * 2 + [False]
    ledger.add(5, T + 5)
    assert ledger.ranges == [[1, 3, T + 1], [5, 5, T + 5], [7, 8, T + 7]]
    ledger.add(4, T + 4)
    ledger.add(6, T + 6)
    assert ledger.ranges == [[1, 8, T + 1]]


def test_compaction_closes_only_gaps_whose_events_are_all_too_old() -> None:
    ledger = Ledger([[3, 5, T + 3], [9, 9, T + 9], [20, 30, T + 20]])
    ledger.compact(before=T + 10)  # the gaps below 3 and below 9 can only hold events made before T + 10
    assert ledger.ranges == [[1, 9, T + 3], [20, 30, T + 20]]
    assert all(seq in ledger for seq in range(1, 10)) and 15 not in ledger
    ledger.compact(before=T + 21)
    assert ledger.ranges == [[1, 30, T + 3]]


def test_compaction_keeps_recent_ranges_apart() -> None:
    ledger = Ledger([[3, 5, T + 3], [9, 9, T + 9]])
    ledger.compact(before=T)
    assert ledger.ranges == [[3, 5, T + 3], [9, 9, T + 9]]  # 1, 2, 6, 7, 8 may still come


def test_a_ledger_round_trips_its_document_and_expires_after_the_horizon() -> None:
    ledger = Ledger([[1, 4, T], [6, 6, T + 6]], newest=T + 6)
    horizon = timedelta(days=8)
    document = ledger.document(horizon)
    assert document["ranges"] == [1, 4, T, 6, 6, T + 6]  # flat: Firestore arrays cannot nest
    again = Ledger.from_document(document)
    assert (again.ranges, again.newest) == (ledger.ranges, ledger.newest)
    assert document["expire_at"] == datetime.fromtimestamp(T + 6, timezone.utc) + horizon + timedelta(days=1)


def test_journal_rows_keep_what_counting_needs() -> None:
    producer = Producer()
    at = datetime.fromtimestamp(T, timezone.utc)
    events = [ClickEvent.new(7, "IPhone", producer=producer, now=at, visitor="0123456789abcdef"),
              ClickEvent.new(8, None, producer=producer, bot=True, now=at),
              ClickEvent("c" * 32, 9, "Android", at)]  # schema 1: no producer
    rows = unpack(pack([Row.of(event) for event in events]))
    assert rows == [Row(producer.id, 1, "", 7, "IPhone", False, T, False, "0123456789abcdef"),
                    Row(producer.id, 2, "", 8, None, True, T, False, ""),
                    Row("", 0, "c" * 32, 9, "Android", False, T, False, "")]
    assert [row.counters() for row in rows] == [("click_count", "iphone_click_count"), ("bot_click_count",),
                                                ("click_count", "android_click_count")]
    assert [row.sketch() for row in rows] == ["IPhone", None, None]


def test_an_inactive_click_counts_apart_per_platform_and_a_bot_stays_a_bot() -> None:
    producer = Producer()
    at = datetime.fromtimestamp(T, timezone.utc)
    # a visitor key made by mistake changes nothing: the visitors are those of the clicks the totals count
    events = [ClickEvent.new(7, "WindowsPhone", producer=producer, now=at, inactive=True, visitor="0123456789abcdef"),
              ClickEvent.new(7, "Android", producer=producer, now=at, bot=True, inactive=True),
              ClickEvent.new(7, None, producer=producer, now=at, bot=True, inactive=True)]
    rows = unpack(pack([Row.of(event) for event in events]))
    assert [row.inactive for row in rows] == [True, True, True]
    assert [row.counters() for row in rows] == [
        ("inactive_click_count", "windowsphone_inactive_click_count"), ("bot_click_count",), ("bot_click_count",)]
    assert [row.sketch() for row in rows] == [None, None, None]


def test_rows_journaled_before_inactive_existed_still_unpack_as_active_clicks() -> None:
    before = zlib.compress(json.dumps([["a" * 16, 3, "", 7, "IPhone", False, T]]).encode())  # as pack wrote them
    [row] = unpack(before)
    assert row == Row("a" * 16, 3, "", 7, "IPhone", False, T, False, "")
    assert row.counters() == ("click_count", "iphone_click_count") and row.sketch() is None


def test_rows_journaled_with_only_the_inactive_flag_or_only_the_visitor_key_unpack_with_it() -> None:
    # As pack wrote them when each of the two was new: the flag or the key after ts, alone.
    flagged = zlib.compress(json.dumps([["a" * 16, 4, "", 7, "IPhone", False, T, True]]).encode())
    keyed = zlib.compress(json.dumps([["a" * 16, 5, "", 7, "IPhone", False, T, "0123456789abcdef"]]).encode())
    [inactive] = unpack(flagged)
    assert inactive == Row("a" * 16, 4, "", 7, "IPhone", False, T, True, "")
    assert inactive.counters() == ("inactive_click_count", "iphone_inactive_click_count")
    [visitor] = unpack(keyed)
    assert visitor == Row("a" * 16, 5, "", 7, "IPhone", False, T, False, "0123456789abcdef")
    assert visitor.counters() == ("click_count", "iphone_click_count") and visitor.sketch() == "IPhone"


def test_a_batch_is_cut_into_entries_each_applied_in_one_commit() -> None:
    producer = Producer()
    at = datetime.now(timezone.utc)
    # Every event a campaign of its own: two writes each (the campaign, its day) when applied.
    events = [(str(i), Row.of(ClickEvent.new(i + 1, "Android", producer=producer, now=at))) for i in range(1000)]
    entries = _entries(events)
    assert [message_id for entry in entries for message_id, _ in entry] == [str(i) for i in range(1000)]
    assert len(entries) == 5  # 249 campaigns, their 249 days, the producer and the entry's delete: 500
    assert [len(entry) for entry in entries] == [249, 249, 249, 249, 4]
    one_campaign = [(str(i), Row.of(ClickEvent.new(1, "Android", producer=producer, now=at))) for i in range(1000)]
    assert len(_entries(one_campaign)) == 1


def test_the_sketches_an_entry_changes_are_bounded_apart_from_its_writes() -> None:
    producer = Producer()
    start = datetime.fromtimestamp(T, timezone.utc)
    # One campaign, a click an hour, each a visitor: a sketch each (and a day every 24).
    events = [(str(i), Row.of(ClickEvent.new(1, "Android", producer=producer, now=start + timedelta(hours=i),
                                             visitor=f"{i:016x}"))) for i in range(1000)]
    entries = _entries(events)
    assert [len(entry) for entry in entries] == [MAX_SKETCHES_PER_COMMIT, 1000 - MAX_SKETCHES_PER_COMMIT]
    for entry in entries:
        keys = {key for _, row in entry for key in row.touches()}
        sketches = {key for key in keys if key[0] == SKETCH}
        assert len(sketches) <= MAX_SKETCHES_PER_COMMIT and len(keys - sketches) + 1 <= MAX_WRITES_PER_COMMIT
    anonymous = [(i, row._replace(visitor="")) for i, row in events]
    assert len(_entries(anonymous)) == 1  # without visitors: the campaign, its 42 days, the producer


def test_a_commit_full_of_sketches_and_a_day_of_them_stay_within_firestores_limits() -> None:
    assert MAX_SKETCHES_PER_COMMIT * MAX_SKETCH_BYTES <= 8 * 2**20  # a commit's request: 10 MiB in all
    assert 24 * 3 * MAX_SKETCH_BYTES < 2**20 * 0.75  # a day document, every hour and platform: 1 MiB


def test_a_group_counts_each_document_once_however_many_items_touch_it() -> None:
    shared = [("campaign", 1), ("day", 1, 20000), ("producer", "p")]
    items = [shared + [("record", str(i))] for i in range(600)]  # three documents in common, one of their own
    groups = grouped_by_writes(items, lambda keys: keys, per_item=1, per_group=0)
    # 3 shared + 248 records + 248 entry deletes = 499; one more item would make 501
    assert [len(group) for group in groups] == [248, 248, 104]
    assert grouped_by_writes([], lambda keys: keys, per_item=1, per_group=0) == []
