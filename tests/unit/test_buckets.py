"""Stats ranges and buckets: calendar rules, time zones, DST days, limits and bad parameters."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from buckets import MAX_BUCKETS, StatsRange, fold, fold_visitors, parse_range, total

from shared.errors import BadRequest
from shared.models import zero_counters
from shared.sketches import add_visitors

UTC = timezone.utc
NOW = datetime(2026, 11, 29, 12, 34, 56, tzinfo=UTC)


def hours(bucket_range: StatsRange) -> list[float]:
    return [(b.end - b.start).total_seconds() / 3600 for b in bucket_range.buckets]


def iso_starts(bucket_range: StatsRange) -> list[str]:
    return [bucket_range.local(b.start).isoformat() for b in bucket_range.buckets]


def iso(bucket_range: StatsRange, moment: datetime) -> str:
    return bucket_range.local(moment).isoformat()


def test_defaults_are_the_last_seven_utc_days_by_day_ending_with_today() -> None:
    days = parse_range({}, NOW)
    assert (days.granularity, days.tz_name) == ("day", "UTC")
    assert iso_starts(days)[0] == "2026-11-23T00:00:00+00:00"
    assert iso(days, days.end) == "2026-11-30T00:00:00+00:00"
    assert len(days.buckets) == 7 and hours(days) == [24] * 7


def test_the_spring_forward_day_in_ljubljana_has_23_hours() -> None:
    days = parse_range({"from": "2026-03-28", "to": "2026-03-31", "tz": "Europe/Ljubljana"}, NOW)
    assert hours(days) == [24, 23, 24]
    assert iso_starts(days) == ["2026-03-28T00:00:00+01:00", "2026-03-29T00:00:00+01:00",
                                "2026-03-30T00:00:00+02:00"]
    assert iso(days, days.buckets[1].end) == "2026-03-30T00:00:00+02:00"


def test_the_fall_back_day_in_ljubljana_has_25_hours() -> None:
    days = parse_range({"from": "2026-10-25", "to": "2026-10-26", "tz": "Europe/Ljubljana"}, NOW)
    assert hours(days) == [25]
    assert (iso(days, days.start), iso(days, days.end)) == ("2026-10-25T00:00:00+02:00",
                                                            "2026-10-26T00:00:00+01:00")


def test_hour_buckets_over_a_dst_change_are_every_real_hour_once() -> None:
    by_hour = parse_range({"from": "2026-10-25", "to": "2026-10-26", "tz": "Europe/Ljubljana",
                           "granularity": "hour"}, NOW)
    assert len(by_hour.buckets) == 25 and set(hours(by_hour)) == {1}
    starts = iso_starts(by_hour)
    assert starts[2:4] == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]  # 02:00 happens twice


def test_a_zone_with_a_half_hour_offset_starts_its_days_on_the_whole_utc_hour_before_midnight() -> None:
    days = parse_range({"from": "2026-06-01", "to": "2026-06-03", "tz": "Asia/Kolkata"}, NOW)
    assert iso_starts(days) == ["2026-05-31T23:30:00+05:30", "2026-06-01T23:30:00+05:30"]
    assert hours(days) == [24, 24]
    assert days.start.astimezone(UTC).isoformat() == "2026-05-31T18:00:00+00:00"


def test_a_day_the_zone_skipped_has_no_bucket() -> None:
    days = parse_range({"from": "2011-12-29", "to": "2012-01-01", "tz": "Pacific/Apia"}, NOW)
    assert [days.local(b.start).date().isoformat() for b in days.buckets] == ["2011-12-29", "2011-12-31"]


def test_a_range_is_widened_to_whole_buckets() -> None:
    by_hour = parse_range({"from": "2026-11-01T10:15", "to": "2026-11-01T12:00:01", "granularity": "hour"}, NOW)
    assert iso_starts(by_hour) == ["2026-11-01T10:00:00+00:00", "2026-11-01T11:00:00+00:00",
                                   "2026-11-01T12:00:00+00:00"]
    days = parse_range({"from": "2026-11-01T23:59:59+01:00", "to": "2026-11-02T00:00:01+01:00",
                        "tz": "Europe/Ljubljana"}, NOW)
    assert iso_starts(days) == ["2026-11-01T00:00:00+01:00", "2026-11-02T00:00:00+01:00"]


def test_naive_moments_are_wall_clock_in_tz_and_offsets_are_kept() -> None:
    local = parse_range({"from": "2026-07-01T00:00", "to": "2026-07-01T01:00", "granularity": "hour",
                         "tz": "America/New_York"}, NOW)
    assert local.start.astimezone(UTC).isoformat() == "2026-07-01T04:00:00+00:00"
    explicit = parse_range({"from": "2026-07-01T00:00Z", "to": "2026-07-01T01:00Z", "granularity": "hour",
                            "tz": "America/New_York"}, NOW)
    assert iso(explicit, explicit.start) == "2026-06-30T20:00:00-04:00"


def test_without_from_the_range_is_seven_local_days_before_to() -> None:
    by_hour = parse_range({"to": "2026-11-10", "granularity": "hour"}, NOW)
    assert len(by_hour.buckets) == 7 * 24
    assert by_hour.end.isoformat() == "2026-11-10T00:00:00+00:00"
    from_only = parse_range({"from": "2026-11-27"}, NOW)
    assert from_only.end.isoformat() == "2026-11-30T00:00:00+00:00"
    assert len(from_only.buckets) == 3


def test_the_longest_ranges_are_a_month_by_hour_and_a_leap_year_by_day() -> None:
    assert len(parse_range({"from": "2026-01-01", "to": "2026-02-01", "granularity": "hour"}, NOW).buckets) == 744
    assert len(parse_range({"from": "2028-01-01", "to": "2029-01-01"}, NOW).buckets) == 366
    with pytest.raises(BadRequest, match="at most 744 buckets by hour"):
        parse_range({"from": "2026-01-01", "to": "2026-02-01T01:00", "granularity": "hour"}, NOW)
    with pytest.raises(BadRequest, match="at most 366 buckets by day"):
        parse_range({"from": "2026-01-01", "to": "2027-01-03"}, NOW)
    with pytest.raises(BadRequest, match="range too long"):
        parse_range({"from": "1970-01-01", "to": "2999-12-31", "granularity": "hour"}, NOW)
    assert MAX_BUCKETS == {"hour": 744, "day": 366}


@pytest.mark.parametrize("args, fragment", [
    ({"from": "yesterday"}, "'from' must be an ISO 8601"),
    ({"to": "2026-13-01"}, "'to' must be an ISO 8601"),
    ({"from": "2026-11-01T25:00"}, "ISO 8601"),
    ({"from": "2026-11-01" + "0" * 80}, "ISO 8601"),
    ({"from": "0001-01-01"}, "within the years 1970 to 2999"),
    ({"to": "9999-12-31T23:59:59"}, "within the years"),
    ({"from": "2026-11-02", "to": "2026-11-01"}, "'to' must be later than 'from'"),
    ({"from": "2026-11-01", "to": "2026-11-01"}, "later than"),
    ({"from": "2026-12-24"}, "without 'to': now"),
    ({"tz": "Mars/Olympus_Mons"}, "IANA time zone"),
    ({"tz": "../../etc/passwd"}, "IANA time zone"),
    ({"tz": "utc"}, "IANA time zone"),
    ({"granularity": "week"}, "'granularity' must be one of hour, day"),
    ({"granularity": "Day"}, "granularity"),
    ({"granularity": ""}, "granularity"),
    ({"tz": ""}, "IANA time zone"),
    ({"to": ""}, "ISO 8601"),
    ({"from": "2026-W13-7"}, "ISO 8601"),
    ({"from": "2026-03-29\n"}, "ISO 8601"),
    ({"from": "２０２６-03-29"}, "ISO 8601"),
])
def test_bad_parameters_are_clear_400s(args: dict[str, str], fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment.replace("(", r"\(").replace(")", r"\)")) as caught:
        parse_range(args, NOW)
    assert caught.value.status == 400


def test_hours_fold_into_their_buckets_and_the_range_keeps_every_bucket() -> None:
    days = parse_range({"from": "2026-03-28", "to": "2026-03-31", "tz": "Europe/Ljubljana"}, NOW)

    def at(iso: str, clicks: int, bots: int = 0) -> tuple[datetime, dict[str, int]]:
        return datetime.fromisoformat(iso), {**zero_counters(), "click_count": clicks,
                                             "android_click_count": clicks, "bot_click_count": bots}

    hourly = dict([
        at("2026-03-27T23:00:00+00:00", 1),  # 00:00 local on the 28th
        at("2026-03-28T22:00:00+00:00", 2),  # 23:00 local: still the 28th
        at("2026-03-28T23:00:00+00:00", 4),  # midnight of the 29th
        at("2026-03-29T21:00:00+00:00", 8, 1),  # 23:00 CEST: the 29th's last hour
        at("2026-03-29T22:00:00+00:00", 16),  # midnight of the 30th
        at("2026-03-30T22:00:00+00:00", 32),  # the 31st: outside
        at("2026-03-27T22:00:00+00:00", 64),  # the 27th: outside
    ])
    series = fold(days, hourly)
    assert [c["click_count"] for c in series] == [3, 12, 16]
    assert [c["bot_click_count"] for c in series] == [0, 1, 0]
    assert total(series)["android_click_count"] == 31
    assert fold(days, {}) == [zero_counters()] * 3


def test_visitors_fold_as_a_union_per_bucket_and_over_the_range() -> None:
    days = parse_range({"from": "2026-03-28", "to": "2026-03-30", "tz": "Europe/Ljubljana"}, NOW)

    def hour(iso: str, *platforms: list[str]) -> tuple[datetime, list[bytes]]:
        return datetime.fromisoformat(iso), [add_visitors(None, visitors) for visitors in platforms]

    hourly = dict([
        hour("2026-03-27T23:00:00+00:00", ["a", "b"], ["a"]),  # midnight of the 28th: a on two platforms
        hour("2026-03-28T10:00:00+00:00", ["a", "c"]),  # a again, the same day
        hour("2026-03-28T23:00:00+00:00", ["a"], ["d"]),  # the 29th
        hour("2026-03-29T22:00:00+00:00", ["e", "f"]),  # the 30th: outside
    ])
    per_bucket, whole = fold_visitors(days, hourly)
    assert per_bucket == [3, 2]  # a, b, c; then a, d
    assert whole == 4  # a once, however many buckets it shows in
    assert fold_visitors(days, {}) == ([0, 0], 0)


def test_every_hour_of_a_year_lands_in_exactly_one_day_of_every_zone() -> None:
    for tz in ("UTC", "Europe/Ljubljana", "America/Santiago", "Asia/Kolkata", "Australia/Lord_Howe",
               "Asia/Kathmandu", "Pacific/Chatham"):
        days = parse_range({"from": "2026-01-01T00:00Z", "to": "2026-12-31T00:00Z", "tz": tz}, NOW)
        count = int((days.end - days.start) / timedelta(hours=1))
        hourly = {days.start + timedelta(hours=h): {**zero_counters(), "click_count": 1} for h in range(count)}
        series = fold(days, hourly)
        assert total(series)["click_count"] == count, tz
        assert [c["click_count"] for c in series] == [round(h) for h in hours(days)], tz
        assert all(a.end == b.start for a, b in zip(days.buckets, days.buckets[1:], strict=False)), tz
