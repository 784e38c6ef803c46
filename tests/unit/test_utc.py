import time
from datetime import datetime, timedelta, timezone

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds

from shared.utc import as_utc, from_epoch_seconds, hour_of


def test_a_firestore_timestamp_becomes_a_plain_utc_datetime_with_every_microsecond() -> None:
    stored = DatetimeWithNanoseconds.from_rfc3339("2026-11-29T12:34:56.999999789Z")
    plain = as_utc(stored)
    assert type(plain) is datetime and plain.tzinfo is timezone.utc
    assert plain == datetime(2026, 11, 29, 12, 34, 56, 999999, tzinfo=timezone.utc)


def test_a_moment_in_another_zone_is_the_same_moment_in_utc() -> None:
    moment = datetime(2026, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(moment).tzinfo is timezone.utc
    assert as_utc(moment).isoformat() == "2025-12-31T23:30:00+00:00"


def test_a_naive_moment_is_taken_as_utc_whatever_the_machines_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert as_utc(datetime(2026, 7, 1, 12)) == datetime(2026, 7, 1, 12, tzinfo=timezone.utc)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_click_counts_in_the_utc_hour_holding_it() -> None:
    moment = datetime(2026, 3, 1, 5, 10, 7, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert hour_of(moment) == datetime(2026, 2, 28, 23, tzinfo=timezone.utc)
    assert hour_of(moment).tzinfo is timezone.utc


def test_epoch_seconds_come_back_as_the_moment_they_were_packed_from() -> None:
    moment = datetime(2026, 11, 29, 12, 34, 56, tzinfo=timezone.utc)
    assert from_epoch_seconds(int(moment.timestamp())) == moment
    assert from_epoch_seconds(0).tzinfo is timezone.utc
