"""Moments as the project keeps and compares them: aware datetimes in UTC, counted by the UTC hour."""

from __future__ import annotations

from datetime import datetime, timezone


def as_utc(moment: datetime) -> datetime:
    """``moment`` as a plain ``datetime`` in UTC; a naive one is taken to be UTC already.

    Firestore answers timestamps as its own ``datetime`` subclass (with nanoseconds): made plain
    here, field by field so that no microsecond is rounded, they compare, print and serialize
    like the moments written.
    """
    utc = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, timezone.utc)


def from_epoch_seconds(seconds: float) -> datetime:
    """The moment ``seconds`` after the Unix epoch, as packed events and ledgers keep moments."""
    return datetime.fromtimestamp(seconds, timezone.utc)


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour holding ``moment``: the hour its click is counted in."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)
