"""Campaigns as stored and shown, and validation of what the admin API accepts."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from shared.config import TRACK_BASE_URL, ConfigError
from shared.errors import BadRequest
from shared.platforms import COUNTER_FIELDS, PLATFORMS, is_platform
from shared.utc import as_utc

MAX_EXACT_INTEGER = 2**53 - 1  # the largest integer a JavaScript client keeps exact
MAX_CAMPAIGN_ID = MAX_EXACT_INTEGER
MAX_URL_LENGTH = 2048
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
# What the API shows but never takes: ignored in a body, so that what was read can be sent back.
READ_ONLY_FIELDS = frozenset({"id", "created_at", "updated_at", "as_of", "tracking_links", *COUNTER_FIELDS})
_WRITABLE_FIELDS = ("redirect_url", "platforms", "platform_urls", "forward_query",
                    "status", "starts_at", "ends_at", "max_clicks", "fallback_url")
# What the aggregator changes: never part of a campaign's version.
_COUNTED_FIELDS = frozenset({*COUNTER_FIELDS, "as_of"})
IDEMPOTENCY_KEY = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_CHARS = 255
IDEMPOTENCY_KEY_PATTERN = f"^[ -~]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}$"  # printable ASCII, spaces included

ACTIVE, PAUSED, ARCHIVED = "active", "paused", "archived"
STATUSES = (ACTIVE, PAUSED, ARCHIVED)
LISTED_BY_DEFAULT = (ACTIVE, PAUSED)
# RFC 3339's date-time (its T and Z in either case); Python's parser alone takes more forms.
RFC3339_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                   r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")
_RFC3339 = re.compile(RFC3339_PATTERN)

Counters = dict[str, int]


def zero_counters() -> Counters:
    return dict.fromkeys(COUNTER_FIELDS, 0)


# Shared bounds of a route's counting window, so that a route without dates holds no floats of its own.
SINCE_EVER = -math.inf
NEVER = math.inf


@dataclass(frozen=True, slots=True)
class Route:
    """What the track function needs of a campaign: small, as it is cached by the thousand.

    Seven slots take pymalloc's 96-byte block; a date set adds its float, a fallback its string.
    """

    redirect_url: str
    platforms: frozenset[str]
    platform_urls: Mapping[str, str]
    forward_query: bool = False
    fallback_url: str | None = None
    """Where clicks that cannot count go; None: the global FALLBACK_URL."""
    counts_from: float = SINCE_EVER
    """Epoch seconds of the first moment a click counts: ``starts_at``, or NEVER when paused,
    archived or capped as the campaign was read."""
    counts_until: float = NEVER
    """Epoch seconds from which clicks no longer count: ``ends_at``."""

    def destination(self, platform: str | None) -> str:
        """The platform's own URL (an app store, say) if it has one, else the redirect URL."""
        return self.platform_urls.get(platform, self.redirect_url) if platform else self.redirect_url

    def counts_at(self, moment: float) -> bool:
        """Whether a click made at ``moment`` (epoch seconds) counts."""
        return self.counts_from <= moment < self.counts_until


@dataclass(frozen=True)
class Campaign:
    id: int
    redirect_url: str
    platforms: list[str]
    created_at: datetime
    updated_at: datetime
    platform_urls: dict[str, str] = field(default_factory=dict)
    forward_query: bool = False
    status: str = ACTIVE
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    max_clicks: int | None = None
    fallback_url: str | None = None
    counters: Counters = field(default_factory=zero_counters)
    as_of: datetime | None = None
    """Clicks are folded into ``counters`` up to this moment (README, "as_of"); None before any."""

    @property
    def version(self) -> str:
        """Names the campaign as last written: any edit changes it, counted clicks never do.

        It hashes every field shown but the counted ones, so a field added to
        the campaign is in it. ``updated_at`` is too, so an edit that writes back
        the same values is a new version: whoever read before it has not seen it.
        """
        written = {name: value for name, value in self.to_json().items() if name not in _COUNTED_FIELDS}
        return hashlib.sha256(json.dumps(written, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """The original o7tracker's shape, plus ``platform_urls``, ``forward_query``, the lifecycle fields,
        the bot and inactive counters and ``as_of``."""
        return {
            "id": self.id,
            "redirect_url": self.redirect_url,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "platforms": list(self.platforms),
            "platform_urls": dict(self.platform_urls),
            "forward_query": self.forward_query,
            "status": self.status,
            "starts_at": rfc3339(self.starts_at) if self.starts_at is not None else None,
            "ends_at": rfc3339(self.ends_at) if self.ends_at is not None else None,
            "max_clicks": self.max_clicks,
            "fallback_url": self.fallback_url,
            **{name: self.counters.get(name, 0) for name in COUNTER_FIELDS},
            "as_of": rfc3339(self.as_of) if self.as_of is not None else None,
        }


def rfc3339(moment: datetime) -> str:
    return as_utc(moment).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_campaign_id(raw: str | None) -> int | None:
    """The id in a path, or None when it cannot name a campaign."""
    if not raw or not raw.isascii() or not raw.isdigit() or len(raw) > 16:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_CAMPAIGN_ID else None


def validate_url(value: object, name: str) -> str:
    """An absolute http(s) URL with a host and no user info: never ``javascript:``, ``data:`` or relative."""
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{name}' must be a non-empty string")
    if len(value) > MAX_URL_LENGTH:
        raise BadRequest(f"'{name}' is longer than {MAX_URL_LENGTH} characters")
    if _CONTROL_OR_SPACE.search(value):
        raise BadRequest(f"'{name}' must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise BadRequest(f"'{name}' is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"'{name}' must be an absolute http or https URL")
    # "https://good.example@evil.example/" reads as good.example but goes to
    # evil.example, and a password in a link is leaked to every browser that
    # follows it; no campaign needs either.
    if "@" in parts.netloc:
        raise BadRequest(f"'{name}' must not contain user info (user:password@ before the host)")
    return value


def check_track_base_url(value: str | None) -> str | None:
    """The ``TRACK_BASE_URL`` setting, checked as a link's base at cold start (and by ./run.sh before it starts)."""
    if value is None:
        return None
    try:
        return validate_url(value, TRACK_BASE_URL)
    except BadRequest as exc:
        raise ConfigError(f"{TRACK_BASE_URL}={value!r}: {exc.msg}") from None


def validate_idempotency_key(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, value):
        raise BadRequest(f"{IDEMPOTENCY_KEY} must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters "
                         "(a UUID, say)")
    return value


def validate_platforms(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"'platforms' must be a non-empty list, some of {list(PLATFORMS)}")
    unsupported = [p for p in value if not is_platform(p)]
    if unsupported:
        raise BadRequest(f"unsupported platform(s) {unsupported!r}; supported: {list(PLATFORMS)}")
    return list(dict.fromkeys(value))  # duplicates dropped, order kept


def validate_platform_urls(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadRequest("'platform_urls' must be an object of platform to URL")
    unsupported = [p for p in value if not is_platform(p)]
    if unsupported:
        raise BadRequest(f"unsupported platform(s) {unsupported!r} in 'platform_urls'")
    return {p: validate_url(url, f"platform_urls.{p}") for p, url in value.items()}


def validate_forward_query(value: object) -> bool:
    if not isinstance(value, bool):  # "false" or 0 would read as a choice the sender never made
        raise BadRequest("'forward_query' must be true or false")
    return value


def validate_status(value: object) -> str:
    if value not in STATUSES:
        raise BadRequest(f"'status' must be one of {', '.join(STATUSES)}")
    return str(value)


def validate_moment(value: object, name: str) -> datetime | None:
    """An RFC 3339 date-time with its offset, in UTC to the microsecond; None (null) unsets it."""
    if value is None:
        return None
    example = "2026-06-01T09:00:00Z or 2026-06-01T11:00:00+02:00"
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise BadRequest(f"'{name}' must be an RFC 3339 date-time with an offset, such as {example}, or null")
    try:
        return datetime.fromisoformat(value.upper()).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise BadRequest(f"'{name}' is not a date-time that exists, such as {example}") from None


def validate_max_clicks(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_EXACT_INTEGER:  # bool is an int, and not a number of clicks
        raise BadRequest(f"'max_clicks' must be a whole number from 1 to {MAX_EXACT_INTEGER}, or null")
    return value


def validate_fallback_url(value: object) -> str | None:
    return None if value is None else validate_url(value, "fallback_url")


def check_window(starts_at: datetime | None, ends_at: datetime | None) -> None:
    """A campaign's dates, as they will be stored: ``ends_at`` after ``starts_at``."""
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise BadRequest(f"'ends_at' must be after 'starts_at' ({rfc3339(starts_at)})")


_VALIDATORS = {
    "redirect_url": lambda v: validate_url(v, "redirect_url"),
    "platforms": validate_platforms,
    "platform_urls": validate_platform_urls,
    "forward_query": validate_forward_query,
    "status": validate_status,
    "starts_at": lambda v: validate_moment(v, "starts_at"),
    "ends_at": lambda v: validate_moment(v, "ends_at"),
    "max_clicks": validate_max_clicks,
    "fallback_url": validate_fallback_url,
}


def parse_campaign_fields(body: object, *, partial: bool) -> dict[str, Any]:
    """The writable fields of a create (``partial=False``) or update body.

    Read-only fields (id, timestamps, counters) are ignored so a client may
    send back what it read; any other unknown field is an error, as it is
    most likely a typo that would otherwise be silently dropped.
    """
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - READ_ONLY_FIELDS - set(_WRITABLE_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    required = () if partial else ("redirect_url", "platforms")
    missing = [name for name in required if name not in body]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    values: dict[str, Any] = {name: _VALIDATORS[name](body[name]) for name in _WRITABLE_FIELDS if name in body}
    if partial and not values:
        raise BadRequest(f"nothing to update; send any of {', '.join(_WRITABLE_FIELDS)}")
    check_window(values.get("starts_at"), values.get("ends_at"))
    return values
