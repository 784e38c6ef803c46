"""Which partition a click, a message and a producer belong to."""

from __future__ import annotations

from collections import Counter

import pytest

from shared.partitions import Producers, owner, partition_of, subscription_of


@pytest.mark.parametrize("partitions", [1, 2, 3, 7, 32])
def test_a_workers_producers_take_turns_each_in_its_own_partition(partitions: int) -> None:
    producers = Producers(partitions)
    drawn = [producers.next() for _ in range(5 * partitions)]
    assert Counter(partition_of(p.id, partitions) for p in drawn) == {n: 5 for n in range(partitions)}
    assert len({p.id for p in drawn}) == partitions
    assert all(len(p.id) == 16 and int(p.id, 16) < 2**64 for p in drawn)


def test_a_message_belongs_to_the_partition_it_names_else_to_partition_0() -> None:
    assert owner({"partition": "2"}, 3) == 2
    assert owner({}, 3) == 0  # from before partitions, or a replay
    for odd in ("3", "12", "x", "", "-1", "²", "١"):  # beyond the partitions, or not an ASCII number
        assert owner({"partition": odd}, 3) == 0, odd


def test_a_schema_1_event_without_a_producer_is_partition_0s() -> None:
    assert partition_of("", 4) == 0


def test_partition_0_drains_the_click_subscription_itself() -> None:
    assert [subscription_of("clicks", n) for n in range(3)] == ["clicks", "clicks-p1", "clicks-p2"]
