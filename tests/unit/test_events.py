import dataclasses
import json
from datetime import datetime, timezone

import pytest

from shared.errors import InvalidEvent
from shared.events import ClickEvent, Producer

PRODUCER = Producer()


def test_an_event_survives_the_wire() -> None:
    event = ClickEvent.new(42, "IPhone", producer=PRODUCER, user_agent="UA", referrer="https://ref.example/")
    assert ClickEvent.decode(event.encode()) == event
    assert len(event.click_id) == 32
    assert event.ts.tzinfo is not None


def test_each_click_gets_its_own_id() -> None:
    assert len({ClickEvent.new(1, "Android", producer=PRODUCER).click_id for _ in range(1000)}) == 1000


def test_headers_are_truncated_for_the_event() -> None:
    event = ClickEvent.new(1, "Android", producer=PRODUCER, user_agent="u" * 5000, referrer="r" * 5000)
    assert len(event.user_agent) == 512 and len(event.referrer) == 512


GOOD = ClickEvent("a" * 32, 7, "Android", datetime(2026, 1, 1, tzinfo=timezone.utc)).fields()


@pytest.mark.parametrize("payload", [
    b"not json", b"\xff\xfe", b"[]", b"null",
    json.dumps({**GOOD, "click_id": "short"}).encode(),
    json.dumps({**GOOD, "click_id": None}).encode(),
    json.dumps({**GOOD, "campaign_id": "7"}).encode(),
    json.dumps({**GOOD, "campaign_id": 0}).encode(),
    json.dumps({**GOOD, "campaign_id": True}).encode(),
    json.dumps({**GOOD, "campaign_id": 2**53}).encode(),
    json.dumps({**GOOD, "platform": "android"}).encode(),
    json.dumps({**GOOD, "ts": "yesterday"}).encode(),
    json.dumps({**GOOD, "ts": "2026-01-01T00:00:00"}).encode(),
    json.dumps({k: v for k, v in GOOD.items() if k != "ts"}).encode(),
    json.dumps({**GOOD, "bot": "yes"}).encode(),
])
def test_malformed_events_are_refused(payload: bytes) -> None:
    with pytest.raises(InvalidEvent):
        ClickEvent.decode(payload)


def test_only_a_bot_click_may_lack_a_platform() -> None:
    bot = ClickEvent.new(1, None, producer=PRODUCER, bot=True)
    assert ClickEvent.decode(bot.encode()) == bot
    with pytest.raises(InvalidEvent, match="platform"):
        ClickEvent.decode(ClickEvent.new(1, None, producer=PRODUCER).encode())


def test_the_wire_format_names_every_field() -> None:
    event = ClickEvent.new(3, "Android", producer=PRODUCER, user_agent="UA", bot=True)
    assert set(event.fields()) == {f.name for f in dataclasses.fields(ClickEvent)} | {"v"}
