"""Visitor keys: which clicks came from one visitor in a day, without keeping who the visitor is.

A click's visitor key is HMAC-SHA256, under the salt of the click's UTC day,
of the client's address and User-Agent, cut to 64 bits (16 hex digits). The
track function computes it and publishes only the key: no address is ever
stored, published or logged. Within a day one visitor always gets the same
key, so the aggregator can count distinct visitors (shared/sketches.py); the
next day's salt gives the same visitor an unrelated key.

The salt of a day, ``salts/{YYYYMMDD}``, is 32 random bytes shared by every
track instance. Its ``expire_at`` is two days after the day starts, and
Firestore's TTL deletes it then: from then on nobody, with or without the
database, can recompute a key from an address, nor link that day's keys to
any other day's. The aggregate's scheduled run makes today's and tomorrow's
salts (:class:`SaltKeeper`), so that the track function, whose service account
may only read Firestore, only ever reads them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.store import SALTS
from shared.utc import as_utc

SALT_BYTES = 32
KEY_HEX_DIGITS = 16
# From the start of the salt's day: its own day and a day's margin for clocks and late reads.
SALT_LIFETIME = timedelta(days=2)


def salt_day(moment: datetime) -> date:
    """The UTC day whose salt keys a click made at ``moment``."""
    return as_utc(moment).date()


def salt_id(day: date) -> str:
    return f"{day:%Y%m%d}"


def visitor_key(salt: bytes, address: str, user_agent: str) -> str:
    message = f"{address}\n{user_agent}".encode("utf-8", "surrogatepass")
    return hmac.new(salt, message, hashlib.sha256).hexdigest()[:KEY_HEX_DIGITS]


def salt_of(data: dict[str, Any]) -> bytes | None:
    """The salt a ``salts/*`` document holds, or None if it holds none fit to key with."""
    salt = data.get("salt")
    return salt if isinstance(salt, bytes) and len(salt) == SALT_BYTES else None


class SaltKeeper:
    """Makes sure today's and tomorrow's salts exist, so that track instances find them ready.

    Each is created on condition that it does not exist yet: whichever run comes first makes it,
    the others leave it as it is. A day found is remembered, so a warm instance tries each day once.
    """

    def __init__(self, db: firestore.Client, timeout: float) -> None:
        self.db = db
        self.timeout = timeout
        self._present: set[date] = set()

    def keep_ahead(self, now: datetime) -> list[date]:
        """Create the salts of ``now``'s UTC day and the next that are missing; returns the days created."""
        today = salt_day(now)
        self._present &= {today, today + timedelta(days=1)}
        created = []
        for day in (today, today + timedelta(days=1)):
            if day in self._present:
                continue
            expire_at = datetime.combine(day, time(), timezone.utc) + SALT_LIFETIME
            try:
                self.db.collection(SALTS).document(salt_id(day)).create(
                    {"salt": secrets.token_bytes(SALT_BYTES), "expire_at": expire_at}, timeout=self.timeout)
                created.append(day)
            except gexc.AlreadyExists:
                pass
            self._present.add(day)
        return created
