"""The click event: what the track function publishes and the aggregator folds.

Each event carries the id of the process that made it (its *producer*, drawn
when a track worker starts) and that producer's sequence number for it. The
pair names the click for exactly-once counting (see shared/counting.py): a
redelivered, republished or replayed event carries the same pair, and the
aggregator keeps per producer the numbers it counted as a few merged ranges.
Events of schema version 1, from before producers, carry only ``click_id``.

A click its campaign could not count (paused, outside its dates, capped, or on a
platform it does not target) is an event too, marked ``inactive``, so that it is
counted apart.

A click may carry its ``visitor`` key (shared/visitors.py): a daily pseudonym
of the client, never its address. Events made before visitor keys, bot and
inactive clicks, and clicks made while the day's salt was unavailable carry none.

Either field is in an event only when it has something to say: an event
without them is as it was before they existed.

A Pub/Sub message carries one event, or several, one per line
(:func:`join_events`): the track function puts the events of one Publish call
that go to the same partition into one message, so that what Pub/Sub does per
message (a publish, a pull, an ack, a push) is done once for them all. An
encoded event is compact JSON, with no line break in it, so a message from
before packing is a message of one event.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

from shared.errors import InvalidEvent
from shared.models import MAX_CAMPAIGN_ID
from shared.platforms import is_platform

SCHEMA_VERSION = 2
EVENT_SEPARATOR: Final = b"\n"
# Most events, and bytes, of one message: its aggregator holds a pulled message's events at once, and an
# event-triggered function is handed a message of at most 512 KB, base64-encoded.
MAX_EVENTS_PER_MESSAGE: Final = 100
MAX_MESSAGE_BYTES: Final = 256_000
_CLICK_ID = re.compile(r"[0-9a-f]{32}")
_PRODUCER_ID = re.compile(r"[0-9a-f]{16}")
_VISITOR_KEY = re.compile(r"[0-9a-f]{16}")
MAX_SEQ = 2**63 - 1
MAX_HEADER_CHARS = 512  # user agent and referrer are kept for replay, not unbounded
# One encoder for every event: json.dumps with separators builds a new one per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ClickEvent:
    click_id: str
    campaign_id: int
    platform: str | None  # None only for a bot click that named no targeted platform
    ts: datetime
    user_agent: str = ""
    referrer: str = ""
    bot: bool = False
    producer: str = ""
    """The producer's id; empty only in a schema 1 event."""
    seq: int = 0
    """The producer's number for this event, from 1; 0 only in a schema 1 event."""
    inactive: bool = False
    """The campaign could not count the click: it counts apart, in the inactive counters."""
    visitor: str = ""
    """The click's visitor key (16 hex digits), or empty when it has none."""

    @classmethod
    def new(
        cls,
        campaign_id: int,
        platform: str | None,
        *,
        producer: Producer,
        user_agent: str = "",
        referrer: str = "",
        bot: bool = False,
        inactive: bool = False,
        now: datetime | None = None,
        visitor: str = "",
    ) -> ClickEvent:
        return cls(
            click_id=secrets.token_hex(16),
            campaign_id=campaign_id,
            platform=platform,
            ts=now or datetime.now(timezone.utc),
            user_agent=user_agent[:MAX_HEADER_CHARS],
            referrer=referrer[:MAX_HEADER_CHARS],
            bot=bot,
            producer=producer.id,
            seq=producer.next_seq(),
            inactive=inactive,
            visitor=visitor,
        )

    def fields(self) -> dict[str, Any]:
        """Every field as plain JSON values, for the wire and for log lines.

        Spelled out rather than ``dataclasses.asdict``, which deep-copies and
        cost several percent of a click's CPU (python -m bench.hotpath).
        """
        fields: dict[str, Any] = {
            "click_id": self.click_id,
            "campaign_id": self.campaign_id,
            "platform": self.platform,
            "ts": self.ts.isoformat(),
            "user_agent": self.user_agent,
            "referrer": self.referrer,
            "bot": self.bot,
            "v": 1,
        }
        if self.producer:
            fields |= {"producer": self.producer, "seq": self.seq, "v": SCHEMA_VERSION}
        # else a schema 1 event, logged before producers and replayed now: it stays what it was
        if self.inactive:
            fields["inactive"] = True
        if self.visitor:
            fields["visitor"] = self.visitor
        return fields

    def encode(self) -> bytes:
        return _COMPACT.encode(self.fields()).encode()

    @classmethod
    def decode(cls, data: bytes) -> ClickEvent:
        """Parse and validate one event; anything malformed raises :class:`InvalidEvent`."""
        try:
            return cls._decode(data)
        except InvalidEvent:
            raise
        except Exception as exc:  # noqa: BLE001  # whatever a bad payload trips over is still a bad payload
            raise InvalidEvent(f"undecodable: {exc!r}") from None

    @classmethod
    def _decode(cls, data: bytes) -> ClickEvent:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidEvent(f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidEvent("not a JSON object")
        click_id = raw.get("click_id")
        if not isinstance(click_id, str) or not _CLICK_ID.fullmatch(click_id):
            raise InvalidEvent("click_id must be 32 lowercase hex digits")
        campaign_id = raw.get("campaign_id")
        if type(campaign_id) is not int or not 0 < campaign_id <= MAX_CAMPAIGN_ID:
            raise InvalidEvent("campaign_id must be a positive integer")
        platform, bot, inactive = raw.get("platform"), raw.get("bot", False), raw.get("inactive", False)
        if not isinstance(bot, bool):
            raise InvalidEvent("bot must be a boolean")
        if not isinstance(inactive, bool):
            raise InvalidEvent("inactive must be a boolean")
        if not is_platform(platform) and not (bot and platform is None):
            raise InvalidEvent(f"unsupported platform {platform!r}")
        try:
            ts = datetime.fromisoformat(raw["ts"])
        except (KeyError, TypeError, ValueError):
            raise InvalidEvent("ts must be an ISO 8601 timestamp") from None
        if ts.tzinfo is None:
            raise InvalidEvent("ts must carry a time zone")
        try:
            ts = ts.astimezone(timezone.utc)
        except OverflowError:
            raise InvalidEvent("ts is out of range") from None
        user_agent, referrer = raw.get("user_agent", ""), raw.get("referrer", "")
        if not isinstance(user_agent, str) or not isinstance(referrer, str):
            raise InvalidEvent("user_agent and referrer must be strings")
        producer, seq = raw.get("producer", ""), raw.get("seq", 0)
        if raw.get("v", 1) >= SCHEMA_VERSION or "producer" in raw:
            if not isinstance(producer, str) or not _PRODUCER_ID.fullmatch(producer):
                raise InvalidEvent("producer must be 16 lowercase hex digits")
            if type(seq) is not int or not 0 < seq <= MAX_SEQ:
                raise InvalidEvent("seq must be a positive integer")
        visitor = raw.get("visitor", "")
        if not isinstance(visitor, str) or (visitor and not _VISITOR_KEY.fullmatch(visitor)):
            raise InvalidEvent("visitor must be 16 lowercase hex digits when present")
        return cls(click_id, campaign_id, platform, ts, user_agent, referrer, bot, producer, seq, inactive, visitor)


class Producer:
    """One process's source of events: an id drawn at its start, and the next sequence number.

    Made once per track worker, after the fork, so two workers never share an id.
    """

    def __init__(self, producer_id: str | None = None) -> None:
        self.id = producer_id or secrets.token_hex(8)
        self._numbers = itertools.count(1)

    def next_seq(self) -> int:
        # next() on itertools.count is atomic under the GIL: threads never share a number.
        return next(self._numbers)


def join_events(encoded: Sequence[bytes]) -> bytes:
    """One message's data for these encoded events."""
    return EVENT_SEPARATOR.join(encoded)


def split_events(data: bytes) -> list[bytes]:
    """The encoded events of one message's data."""
    return data.split(EVENT_SEPARATOR)


def count_events(data: bytes) -> int:
    """How many events one message's data holds, without decoding them."""
    return data.count(EVENT_SEPARATOR) + 1
