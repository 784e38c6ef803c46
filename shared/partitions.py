"""Partitions of the click stream: each drained by its own scheduled run, on its own subscription.

A track worker numbers its events under one producer per partition and
picks them in turn, so the partitions share the clicks evenly however few
workers there are. A producer's events all belong to the partition its id
maps to, so its ledger (``producers/{id}``) is only ever written by that
partition's apply step, and each click's message carries its partition as
the attribute ``partition``. Replays (tools/replay.py) are published without
it, so whatever partitions the replay's settings name, partition 0 takes
them (its apply step then writes other partitions' ledgers, each write
conditional, as two drains' always are). Partition 0 drains ``CLICKS_SUBSCRIPTION``; each
other partition ``{CLICKS_SUBSCRIPTION}-p{n}``, filtered on the attribute
(deploy.sh). A message without the attribute (from a track instance older
than partitions) is partition 0's, as is one naming a partition beyond
``AGGREGATE_PARTITIONS``.

A drain journals only its own partition's messages and acks the others
unjournaled: every subscription gets its own copy of each message its filter
admits, so those are on their own partition's subscription too. On Pub/Sub
that happens only on a subscription without a filter (partition 0's, when it
was made before partitions); the emulator ignores filters, so there every
drain sees every message.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import count
from typing import Final

from shared.events import Producer

PARTITION_ATTRIBUTE: Final = "partition"


def partition_of(producer_id: str, partitions: int) -> int:
    """The partition a producer's events belong to (a schema 1 event, without one, to partition 0)."""
    return int(producer_id, 16) % partitions if producer_id else 0


def partition_named(raw: str, partitions: int) -> int | None:
    """The partition ``raw`` names (ASCII digits, below ``partitions``), or None."""
    if raw.isascii() and raw.isdigit() and int(raw) < partitions:
        return int(raw)
    return None


def owner(attributes: Mapping[str, str], partitions: int) -> int:
    """The partition whose drain journals a message with these attributes."""
    return partition_named(attributes.get(PARTITION_ATTRIBUTE, ""), partitions) or 0


def subscription_of(base: str, partition: int) -> str:
    """The pull subscription of ``partition``, named after the click subscription ``base``."""
    return base if partition == 0 else f"{base}-p{partition}"


def subscription_filter(partition: int) -> str:
    """The Pub/Sub filter of ``partition``'s subscription; partition 0's also admits messages
    without the attribute."""
    if partition == 0:
        return f'NOT attributes:{PARTITION_ATTRIBUTE} OR attributes.{PARTITION_ATTRIBUTE} = "0"'
    return f'attributes.{PARTITION_ATTRIBUTE} = "{partition}"'


class Producers:
    """A worker's producers, one per partition, taken in turn."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._all = [Producer(_id_in(partition, partitions)) for partition in range(partitions)]
        self._turn = count()

    def next(self) -> Producer:
        return self._all[next(self._turn) % self.partitions]


def _id_in(partition: int, partitions: int) -> str:
    """A fresh random producer id that maps to ``partition``."""
    drawn = int(Producer().id, 16)
    within = drawn - drawn % partitions + partition
    if within >= 1 << 64:
        within -= partitions
    return f"{within:016x}"
