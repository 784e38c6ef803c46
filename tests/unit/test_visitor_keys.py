"""Visitor keys: a day's pseudonym of a client, which neither names the client nor links two days."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone

from shared.visitors import salt_day, visitor_key

SALT, OTHER_DAYS_SALT = bytes(range(32)), bytes(range(1, 33))
ADDRESS, UA = "203.0.113.7", "Mozilla/5.0 (Linux; Android 14)"


def test_a_key_is_the_hmac_of_address_and_user_agent_under_the_salt_cut_to_64_bits() -> None:
    key = visitor_key(SALT, ADDRESS, UA)
    assert key == hmac.new(SALT, f"{ADDRESS}\n{UA}".encode(), hashlib.sha256).hexdigest()[:16]
    assert visitor_key(SALT, ADDRESS, UA) == key  # the same visitor the same day: the same key


def test_another_address_user_agent_or_days_salt_gives_an_unrelated_key() -> None:
    key = visitor_key(SALT, ADDRESS, UA)
    others = {visitor_key(SALT, "203.0.113.8", UA), visitor_key(SALT, ADDRESS, UA + " Chrome"),
              visitor_key(OTHER_DAYS_SALT, ADDRESS, UA)}
    assert key not in others and len(others) == 3


def test_the_salts_day_is_the_utc_day_of_the_click() -> None:
    early_in_ljubljana = datetime(2026, 6, 2, 1, 30, tzinfo=timezone(timedelta(hours=2)))  # 23:30 UTC
    assert salt_day(early_in_ljubljana).isoformat() == "2026-06-01"
    assert salt_day(early_in_ljubljana + timedelta(hours=1)).isoformat() == "2026-06-02"
