"""The pure parts of counting: a producer's ledger of counted numbers, journal rows, entry sizes."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from shared.counting import Ledger, Row, _entries, footprint, pack, unpack
from shared.events import ClickEvent, Producer
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
    events = [ClickEvent.new(7, "IPhone", producer=producer, now=at),
              ClickEvent.new(8, None, producer=producer, bot=True, now=at),
              ClickEvent("c" * 32, 9, "Android", at)]  # schema 1: no producer
    rows = unpack(pack(events))
    assert rows == [Row(producer.id, 1, "", 7, "IPhone", False, T), Row(producer.id, 2, "", 8, None, True, T),
                    Row("", 0, "c" * 32, 9, "Android", False, T)]
    assert [row.counters() for row in rows] == [("click_count", "iphone_click_count"), ("bot_click_count",),
                                                ("click_count", "android_click_count")]


def test_a_batch_is_cut_into_entries_each_applied_in_one_commit() -> None:
    producer = Producer()
    at = datetime.now(timezone.utc)
    # Every event a campaign of its own: two writes each (the campaign, its day) when applied.
    events = [(str(i), ClickEvent.new(i + 1, "Android", producer=producer, now=at)) for i in range(1000)]
    entries = _entries(events)
    assert [message_id for entry in entries for message_id, _ in entry] == [str(i) for i in range(1000)]
    assert len(entries) == 5
    assert all(footprint([e for _, e in entry]) + 1 <= MAX_WRITES_PER_COMMIT for entry in entries)
    one_campaign = [(str(i), ClickEvent.new(1, "Android", producer=producer, now=at)) for i in range(1000)]
    assert len(_entries(one_campaign)) == 1
