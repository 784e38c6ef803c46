"""The track function's visitor keys: the day's salt, read once a day per instance, and the keys made with it.

The salt of a click's UTC day is read from Firestore the first time a click
needs it (``salts/{YYYYMMDD}``, made ahead by the aggregate's scheduled run:
shared/visitors.py) and kept in memory. Clicks wait for that first read, and
for no longer than its deadline; whatever it brought, later clicks never wait
for Firestore again that day. A salt not had in time is read again in the
background at most once every ``retry_seconds``, and meanwhile clicks are
counted without a visitor key, which one log line per day says. Once a day's
salt is known the next day's is read ahead in the background, so a warm
instance passes midnight without a wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta

from google.cloud import firestore

from shared.logs import get_logger
from shared.store import SALTS
from shared.visitors import salt_day, salt_id, salt_of, visitor_key

log = get_logger("track")

ReadSalt = Callable[[date], Awaitable["bytes | None"]]
# How often a salt that could not be had is tried again, in the background.
RETRY_SECONDS = 60.0


class VisitorKeys:
    """Runs on one event loop, so it needs no lock."""

    def __init__(self, read_salt: ReadSalt, timeout: float, *, retry_seconds: float = RETRY_SECONDS,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.read_salt = read_salt
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._timer = timer
        self._salts: dict[date, bytes] = {}
        # Held here until done, so a running read is never garbage collected.
        self._reads: dict[date, asyncio.Task[bytes | None]] = {}
        self._tried_at: dict[date, float] = {}
        self._attempts: dict[date, int] = {}
        self._failures: dict[date, str] = {}
        self._reported: set[date] = set()

    async def key(self, address: str, user_agent: str, moment: datetime) -> str:
        """The visitor key of a click made at ``moment``, or "" when the day's salt is not to be had."""
        day = salt_day(moment)
        salt = self._salts.get(day)
        if salt is None:
            read = self._read(day)
            if read is not None and self._attempts[day] == 1:
                # Shielded: a click that goes away must not cancel the read others share.
                salt = await asyncio.shield(read)
        if salt is not None:
            self._read(day + timedelta(days=1))
            return visitor_key(salt, address, user_agent)
        if day not in self._reported:
            self._reported.add(day)
            log.warning("clicks counted without a visitor key: the day's salt is not to be had",
                        extra={"day": salt_id(day), "reason": self._failures.get(day, "still being read")})
        return ""

    async def aclose(self) -> None:
        for read in list(self._reads.values()):
            read.cancel()

    def _read(self, day: date) -> asyncio.Task[bytes | None] | None:
        """The read of ``day``'s salt under way, a new one if none was tried lately, or None."""
        if day in self._salts:
            return None
        read = self._reads.get(day)
        if read is None and self._timer() - self._tried_at.get(day, -self.retry_seconds) >= self.retry_seconds:
            if day not in self._attempts:  # a new day: what is kept of the days before it goes
                self._forget_before(day - timedelta(days=1))
            self._tried_at[day] = self._timer()
            self._attempts[day] = self._attempts.get(day, 0) + 1
            read = asyncio.get_running_loop().create_task(self._fetch(day))
            self._reads[day] = read
        return read

    async def _fetch(self, day: date) -> bytes | None:
        try:
            async with asyncio.timeout(self.timeout):
                salt = await self.read_salt(day)
        except TimeoutError:
            self._failures[day] = f"no answer from Firestore within {self.timeout}s"
            return None
        except Exception as exc:  # noqa: BLE001  # any failure leaves the clicks without a key, never without a redirect
            self._failures[day] = repr(exc)
            return None
        finally:
            del self._reads[day]
        if salt is None:
            self._failures[day] = "not made yet (the aggregate's scheduled run makes each day's ahead)"
            return None
        self._salts[day] = salt
        return salt

    def _forget_before(self, oldest: date) -> None:
        for days in (self._salts, self._tried_at, self._attempts, self._failures):
            for day in [d for d in days if d < oldest]:
                del days[day]
        self._reported = {day for day in self._reported if day >= oldest}


class SaltReader:
    """A day's salt as ``salts/{YYYYMMDD}`` holds it; None when it is not there (yet)."""

    def __init__(self, db: firestore.AsyncClient, timeout: float) -> None:
        self.db = db
        self.timeout = timeout

    async def __call__(self, day: date) -> bytes | None:
        snapshot = await self.db.collection(SALTS).document(salt_id(day)).get(retry=None, timeout=self.timeout)
        return salt_of(snapshot.to_dict() or {}) if snapshot.exists else None
