"""How the track function's publisher packs a Publish call's events into messages."""

from __future__ import annotations

from shared.events import MAX_EVENTS_PER_MESSAGE, MAX_MESSAGE_BYTES, split_events
from shared.publishing import packed


def test_a_calls_events_of_one_partition_share_a_message_and_each_knows_its_message() -> None:
    partitions = [0, 2, 0, 1, 2, 0]
    encoded = [f"event {i}".encode() for i in range(len(partitions))]
    messages, message_of = packed(partitions, encoded)
    assert [(partition, split_events(data)) for partition, data in messages] == [
        (0, [encoded[0], encoded[2], encoded[5]]), (2, [encoded[1], encoded[4]]), (1, [encoded[3]])]
    assert [messages[index][0] for index in message_of] == partitions
    assert all(encoded[i] in split_events(messages[index][1]) for i, index in enumerate(message_of))


def test_a_message_holds_at_most_its_share_of_events_and_bytes() -> None:
    many = [b"x" * 10] * (2 * MAX_EVENTS_PER_MESSAGE + 1)
    messages, _ = packed([0] * len(many), many)
    assert [len(split_events(data)) for _, data in messages] == [MAX_EVENTS_PER_MESSAGE] * 2 + [1]
    large = [b"y" * (MAX_MESSAGE_BYTES // 3)] * 4
    messages, message_of = packed([0] * len(large), large)
    assert message_of == [0, 0, 1, 1] and all(len(data) <= MAX_MESSAGE_BYTES for _, data in messages)


def test_a_partition_whose_message_is_full_opens_another_while_the_others_stay_open() -> None:
    partitions = [0] * MAX_EVENTS_PER_MESSAGE + [1, 0, 1, 2]
    encoded = [f"{i}".encode() for i in range(len(partitions))]
    messages, message_of = packed(partitions, encoded)
    assert [(partition, len(split_events(data))) for partition, data in messages] == [
        (0, MAX_EVENTS_PER_MESSAGE), (1, 2), (0, 1), (2, 1)]
    assert [messages[index][0] for index in message_of] == partitions
