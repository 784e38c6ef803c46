import dataclasses
import json
from datetime import datetime, timezone

import pytest

from shared.errors import InvalidEvent
from shared.events import ClickEvent, Producer, count_events, join_events, split_events

PRODUCER = Producer()


def test_an_event_survives_the_wire() -> None:
    event = ClickEvent.new(42, "IPhone", producer=PRODUCER, user_agent="UA", referrer="https://ref.example/",
                           visitor="0123456789abcdef")
    assert ClickEvent.decode(event.encode()) == event
    assert len(event.click_id) == 32
    assert event.ts.tzinfo is not None


def test_each_click_gets_its_own_id() -> None:
    assert len({ClickEvent.new(1, "Android", producer=PRODUCER).click_id for _ in range(1000)}) == 1000


def test_headers_are_truncated_for_the_event() -> None:
    event = ClickEvent.new(1, "Android", producer=PRODUCER, user_agent="u" * 5000, referrer="r" * 5000)
    assert len(event.user_agent) == 512 and len(event.referrer) == 512


GOOD = ClickEvent("a" * 32, 7, "Android", datetime(2026, 1, 1, tzinfo=timezone.utc), producer="b" * 16, seq=1).fields()


def test_the_good_event_decodes() -> None:
    assert ClickEvent.decode(json.dumps(GOOD).encode()).seq == 1


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
    json.dumps({**GOOD, "inactive": "true"}).encode(),
    json.dumps({**GOOD, "inactive": 1}).encode(),
    json.dumps({**GOOD, "inactive": None}).encode(),
    json.dumps({**GOOD, "visitor": "198.51.100.7"}).encode(),
    json.dumps({**GOOD, "visitor": "0123456789ABCDEF"}).encode(),
    json.dumps({**GOOD, "visitor": 12}).encode(),
])
def test_malformed_events_are_refused(payload: bytes) -> None:
    with pytest.raises(InvalidEvent):
        ClickEvent.decode(payload)


def test_only_a_bot_click_may_lack_a_platform() -> None:
    bot = ClickEvent.new(1, None, producer=PRODUCER, bot=True)
    assert ClickEvent.decode(bot.encode()) == bot
    for inactive in (False, True):
        with pytest.raises(InvalidEvent, match="platform"):
            ClickEvent.decode(ClickEvent.new(1, None, producer=PRODUCER, inactive=inactive).encode())


def test_the_wire_format_names_every_field() -> None:
    event = ClickEvent.new(3, "Android", producer=PRODUCER, user_agent="UA", bot=True, inactive=True,
                           visitor="0123456789abcdef")
    assert set(event.fields()) == {f.name for f in dataclasses.fields(ClickEvent)} | {"v"}
    assert event.fields()["v"] == 2


def test_an_inactive_click_says_so_and_an_active_ones_event_is_as_before() -> None:
    inactive = ClickEvent.new(3, "Android", producer=PRODUCER, inactive=True)
    assert inactive.fields()["inactive"] is True and ClickEvent.decode(inactive.encode()) == inactive
    active = ClickEvent.new(3, "Android", producer=PRODUCER)
    assert "inactive" not in active.fields()  # an aggregator of the version before reads it right
    assert ClickEvent.decode(active.encode()).inactive is False
    assert ClickEvent.decode(json.dumps({**GOOD, "inactive": False}).encode()).inactive is False


@pytest.mark.parametrize("payload", [
    json.dumps({**GOOD, "ts": "9999-12-31T23:00-14:00"}).encode(),  # past the largest datetime once in UTC
    json.dumps({**GOOD, "producer": "XYZ", "seq": 1}).encode(),
    json.dumps({**GOOD, "producer": "a" * 16, "seq": 0}).encode(),
    json.dumps({**GOOD, "producer": "a" * 16, "seq": True}).encode(),
    json.dumps({**GOOD, "producer": "a" * 16, "seq": 2**63}).encode(),
    json.dumps({**GOOD, "v": 2, "producer": None}).encode(),
    json.dumps({**GOOD, "v": "2"}).encode(),
    json.dumps({**GOOD, "click_id": "a" * 32, "ts": ["2026-01-01"]}).encode(),
])
def test_any_bad_event_is_invalid_never_another_error(payload: bytes) -> None:
    with pytest.raises(InvalidEvent):
        ClickEvent.decode(payload)


def test_events_name_their_producer_and_number_its_events_in_order() -> None:
    producer = Producer()
    first, second = (ClickEvent.new(1, "Android", producer=producer) for _ in range(2))
    assert (first.producer, first.seq, second.seq) == (producer.id, 1, 2)
    assert Producer().id != producer.id
    assert ClickEvent.decode(second.encode()) == second


def test_a_click_carries_its_visitor_key_only_when_it_has_one() -> None:
    keyed = ClickEvent.new(3, "Android", producer=PRODUCER, visitor="0123456789abcdef")
    assert keyed.fields()["visitor"] == "0123456789abcdef" and ClickEvent.decode(keyed.encode()) == keyed
    assert "visitor" not in ClickEvent.new(3, "Android", producer=PRODUCER).fields()
    assert "visitor" not in GOOD  # made before visitor keys
    assert ClickEvent.decode(json.dumps(GOOD).encode()).visitor == ""
    assert ClickEvent.decode(json.dumps({**GOOD, "visitor": ""}).encode()).visitor == ""


def test_an_event_of_schema_1_still_decodes_without_a_producer() -> None:
    schema_1 = {k: v for k, v in GOOD.items() if k not in ("producer", "seq")} | {"v": 1}
    event = ClickEvent.decode(json.dumps(schema_1).encode())
    assert (event.producer, event.seq, event.click_id) == ("", 0, "a" * 32)
    assert ClickEvent.decode(event.encode()) == event  # replayed from an old log, it is still schema 1


def test_a_message_carries_its_events_one_a_line_and_a_message_from_before_packing_is_one_event() -> None:
    events = [ClickEvent.new(1, "Android", producer=PRODUCER, user_agent="line\nbreak\r\n", referrer="a\nb")
              for _ in range(3)]
    data = join_events([e.encode() for e in events])
    assert count_events(data) == 3 and [ClickEvent.decode(d) for d in split_events(data)] == events
    assert split_events(events[0].encode()) == [events[0].encode()] and count_events(events[0].encode()) == 1
