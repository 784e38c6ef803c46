"""Stats ranges and their buckets in a time zone: which hours a query covers and how they group.

Pure (no I/O, no clock: ``now`` is passed in), so every calendar rule is unit tested.

Distinct visitors are kept per UTC hour too, as mergeable sketches (shared/sketches.py): a bucket's
figure is the union of its hours', and the range's the union of all of them, never a sum.

Clicks are counted per UTC hour, so every bucket boundary is a whole UTC hour. Hour buckets are
UTC hours, shown in the zone's offset. Day buckets run from local midnight to local midnight, so
a day is 23 or 25 hours long when the clocks change. In the few zones whose offset is not a whole
number of hours (India, Nepal, parts of Australia) a day starts at the whole UTC hour at or before
local midnight, and each bucket's ``start`` and ``end`` say exactly which hours it holds.

A range is half-open, ``[from, to)``, and widened to whole buckets: ``from`` moves back to the
start of its bucket and ``to`` forward to the end of its bucket. A date alone means its local
midnight, so ``from=2026-03-29&to=2026-03-30`` is that one day.
"""

from __future__ import annotations

import re
import zoneinfo
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import TypeVar

from shared.errors import BadRequest
from shared.models import Counters, zero_counters
from shared.platforms import COUNTER_FIELDS
from shared.sketches import VisitorUnion
from shared.utc import as_utc, hour_of

V = TypeVar("V")

HOUR = "hour"
DAY = "day"
GRANULARITIES = (HOUR, DAY)
DEFAULT_GRANULARITY = DAY
DEFAULT_TZ = "UTC"
DEFAULT_DAYS = 7
# An hourly series of a month, a daily one of a leap year: enough for any chart, and a bounded read.
MAX_BUCKETS = {HOUR: 31 * 24, DAY: 366}
# Far enough either way for any real campaign, near enough that no arithmetic on a bound overflows.
MIN_YEAR, MAX_YEAR = 1970, 2999
# ISO 8601's common forms only (Python's parser takes more, such as week dates): the OpenAPI
# document states this pattern, and the parser refuses whatever the pattern refuses.
MOMENT_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
                  r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$")
_MOMENT = re.compile(MOMENT_PATTERN)
# IANA zone names as a pattern, for the document: a name must also be a known zone.
TZ_PATTERN = r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$"
_ONE_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Bucket:
    # In UTC: Python compares and subtracts two times of one zone by their wall clocks,
    # which is wrong across a clock change.
    start: datetime
    end: datetime


@dataclass(frozen=True)
class StatsRange:
    granularity: str
    tz: zoneinfo.ZoneInfo
    buckets: tuple[Bucket, ...]

    @property
    def tz_name(self) -> str:
        return self.tz.key

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz)

    @property
    def start(self) -> datetime:
        return self.buckets[0].start

    @property
    def end(self) -> datetime:
        return self.buckets[-1].end


@cache
def _known_zones() -> frozenset[str]:
    # Only names of the IANA database: ZoneInfo itself would also open any file under its search path.
    return frozenset(zoneinfo.available_timezones())


def parse_tz(raw: str) -> zoneinfo.ZoneInfo:
    if raw not in _known_zones():
        raise BadRequest(f"'tz' must be an IANA time zone name such as Europe/Ljubljana or UTC, got {raw[:64]!r}")
    return zoneinfo.ZoneInfo(raw)


def parse_moment(raw: str, tz: zoneinfo.ZoneInfo, name: str) -> datetime:
    """An ISO 8601 date or date-time; one without an offset is wall-clock time in ``tz``."""
    example = "2026-03-29 or 2026-03-29T14:00 or 2026-03-29T14:00:00+02:00"
    try:
        if not _MOMENT.fullmatch(raw):
            raise ValueError(raw)
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an ISO 8601 date or date-time such as {example}, "
                         f"got {raw[:64]!r}") from None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise BadRequest(f"'{name}' must be within the years {MIN_YEAR} to {MAX_YEAR}, got {raw!r}")
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


def _day_start(day: date, tz: zoneinfo.ZoneInfo) -> datetime:
    """The first whole UTC hour of a local day (where midnight does not exist, the day starts later)."""
    return hour_of(datetime.combine(day, time(), tz))


def _day_of(moment: datetime, tz: zoneinfo.ZoneInfo) -> date:
    """The local day whose bucket holds ``moment`` (a day may start up to an hour before its midnight)."""
    day = moment.astimezone(tz).date()
    return day + timedelta(days=1) if _day_start(day + timedelta(days=1), tz) <= moment else day


def _midnight(moment: datetime, tz: zoneinfo.ZoneInfo) -> date | None:
    """The day that starts at ``moment``, when it is a local midnight."""
    local = moment.astimezone(tz)
    return local.date() if local.time() == time() else None


def _floor(moment: datetime, granularity: str, tz: zoneinfo.ZoneInfo) -> datetime:
    if granularity == HOUR:
        return hour_of(moment)
    return _day_start(_midnight(moment, tz) or _day_of(moment, tz), tz)


def _ceil(moment: datetime, granularity: str, tz: zoneinfo.ZoneInfo) -> datetime:
    start = _floor(moment, granularity, tz)
    if start == moment or (granularity == DAY and _midnight(moment, tz)):
        return start
    return start + _ONE_HOUR if granularity == HOUR else _day_start(_day_of(moment, tz) + timedelta(days=1), tz)


def _bucket_count(start: datetime, end: datetime, granularity: str, tz: zoneinfo.ZoneInfo) -> int:
    if granularity == HOUR:
        return (end - start) // _ONE_HOUR
    return (_day_of(end, tz) - _day_of(start, tz)).days


def parse_range(args: Mapping[str, str], now: datetime) -> StatsRange:
    """The buckets a stats query asks for: ``from``, ``to``, ``granularity`` and ``tz``, with defaults.

    Without ``to`` the range ends with the bucket holding ``now``; without ``from`` it starts
    seven local days before its end.
    """
    granularity = args.get("granularity", DEFAULT_GRANULARITY)
    if granularity not in GRANULARITIES:
        raise BadRequest(f"'granularity' must be one of {', '.join(GRANULARITIES)}, got {granularity[:64]!r}")
    tz = parse_tz(args.get("tz", DEFAULT_TZ))
    start = parse_moment(args["from"], tz, "from") if "from" in args else None
    end = parse_moment(args["to"], tz, "to") if "to" in args else now
    if start is not None and end <= start:
        raise BadRequest("'to' must be later than 'from'" + ("" if "to" in args else " (without 'to': now)"))
    end = _ceil(end, granularity, tz)
    if start is None:
        local_end = end.astimezone(tz).replace(tzinfo=None)
        start = (local_end - timedelta(days=DEFAULT_DAYS)).replace(tzinfo=tz)
    start = _floor(start, granularity, tz)
    count = _bucket_count(start, end, granularity, tz)
    if count > MAX_BUCKETS[granularity]:
        raise BadRequest(f"range too long: at most {MAX_BUCKETS[granularity]} buckets by {granularity}, "
                         f"asked for {count}")
    return StatsRange(granularity, tz, tuple(_buckets(start, end, granularity, tz)))


def _buckets(start: datetime, end: datetime, granularity: str, tz: zoneinfo.ZoneInfo) -> list[Bucket]:
    bounds = [start]
    day = _day_of(start, tz)
    while bounds[-1] < end:
        if granularity == HOUR:
            bounds.append(bounds[-1] + _ONE_HOUR)
            continue
        day += timedelta(days=1)
        day_start = _day_start(day, tz)
        if day_start > bounds[-1]:  # a day a zone skipped (Pacific/Apia, 2011-12-30) has no bucket
            bounds.append(day_start)
    return [Bucket(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def _bucket_of(stats_range: StatsRange, starts: list[datetime], hour: datetime) -> int | None:
    """The index of the bucket holding the UTC hour starting at ``hour``; None outside the range."""
    index = bisect_right(starts, as_utc(hour)) - 1
    return index if index >= 0 and hour < stats_range.buckets[index].end else None


def _by_bucket(stats_range: StatsRange, hourly: Mapping[datetime, V]) -> Iterator[tuple[int, V]]:
    """Each hour's value with the index of the bucket holding the hour; hours outside the range are left out."""
    starts = [bucket.start for bucket in stats_range.buckets]
    for hour, value in hourly.items():
        index = _bucket_of(stats_range, starts, hour)
        if index is not None:
            yield index, value


def fold(stats_range: StatsRange, hourly: Mapping[datetime, Counters]) -> list[Counters]:
    """Each bucket's counters, from counters per UTC hour start; hours outside the range are left out."""
    folded = [zero_counters() for _ in stats_range.buckets]
    for index, counters in _by_bucket(stats_range, hourly):
        for name in COUNTER_FIELDS:
            folded[index][name] += counters.get(name, 0)
    return folded


def fold_visitors(stats_range: StatsRange, hourly: Mapping[datetime, Iterable[bytes]]) -> tuple[list[int], int]:
    """Each bucket's distinct visitors and the whole range's, from visitor sketches per UTC hour start.

    A visitor of several hours (or platforms) of a bucket counts once in it, and once in the range
    however many buckets it shows in: the range's figure is the union of every hour's, not a sum.
    """
    unions = [VisitorUnion() for _ in stats_range.buckets]
    for index, sketches in _by_bucket(stats_range, hourly):
        for sketch in sketches:
            unions[index].add(sketch)
    whole = VisitorUnion()
    for union in unions:
        whole.merge(union)
    return [union.estimate() for union in unions], whole.estimate()


def total(series: list[Counters]) -> Counters:
    summed = zero_counters()
    for counters in series:
        for name in COUNTER_FIELDS:
            summed[name] += counters[name]
    return summed
