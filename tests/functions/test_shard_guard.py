"""COUNTER_SHARDS can only grow: checked at the cold start of admin and aggregate, over the emulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import function_app
from faults import private_emulators, unreachable_host
from google.cloud import firestore

from shared import shard_guard
from shared.config import ConfigError


@pytest.fixture
def guarded_db(db: Any) -> Iterator[Any]:
    """The emptied database, left without a record so later tests start at the default count."""
    yield db
    db.document(shard_guard.META, shard_guard.DOCUMENT).delete()


def recorded(db: Any) -> int | None:
    snapshot = db.document(shard_guard.META, shard_guard.DOCUMENT).get()
    return snapshot.get(shard_guard.FIELD) if snapshot.exists else None


def test_the_count_is_recorded_may_grow_and_never_shrink(guarded_db: Any) -> None:
    assert shard_guard.check_counter_shards(guarded_db, 16) == 16
    assert recorded(guarded_db) == 16
    assert shard_guard.check_counter_shards(guarded_db, 16) == 16
    assert shard_guard.check_counter_shards(guarded_db, 32) == 32
    with pytest.raises(ConfigError, match=r"COUNTER_SHARDS=16 is lower than 32.*shards 16\.\.31.*COUNTER_SHARDS=32"):
        shard_guard.check_counter_shards(guarded_db, 16)
    assert recorded(guarded_db) == 32


def test_instances_starting_together_never_lower_the_record(guarded_db: Any) -> None:
    """Each thread is a cold start with its own count; the record ends at the highest whatever the order."""
    counts = [20, 24, 28, 32] * 3
    barrier = threading.Barrier(len(counts))
    refused: list[int] = []

    def start(count: int) -> None:
        barrier.wait()
        try:
            shard_guard.check_counter_shards(guarded_db, count)
        except ConfigError:
            refused.append(count)

    threads = [threading.Thread(target=start, args=(count,)) for count in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert recorded(guarded_db) == 32
    assert 32 not in refused
    with pytest.raises(ConfigError):
        shard_guard.check_counter_shards(guarded_db, 28)


def test_a_lowered_setting_stops_the_functions_at_cold_start(
    guarded_db: Any, admin_env: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COUNTER_SHARDS", "24")
    function_app("aggregate", "aggregate_http")
    assert recorded(guarded_db) == 24
    function_app("admin", "admin")

    monkeypatch.setenv("COUNTER_SHARDS", "16")
    for name, target in (("admin", "admin"), ("aggregate", "aggregate_http"), ("aggregate", "aggregate_event")):
        with pytest.raises(ConfigError, match="COUNTER_SHARDS=16 is lower than 24"):
            function_app(name, target)
    assert recorded(guarded_db) == 24


def test_an_unreachable_firestore_fails_the_check_within_its_deadline(
    emulator_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", unreachable_host())
    db = firestore.Client(project=emulator_env["GOOGLE_CLOUD_PROJECT"])
    started = time.monotonic()
    with pytest.raises(shard_guard.ShardCheckUnavailable, match="COUNTER_SHARDS=16.*within 2s"):
        shard_guard.check_counter_shards(db, 16, deadline_seconds=2)
    assert time.monotonic() - started < 2 + 5


def test_a_stalled_firestore_fails_the_check_within_its_deadline(
    emulator_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read is sent and never answered: the deadline, not the client's own minute of retries, ends it."""
    project = emulator_env["GOOGLE_CLOUD_PROJECT"]
    with private_emulators(project, "firestore") as private:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", private["firestore"].host)
        db = firestore.Client(project=project)
        # A working Firestore first (its first answer may take the fresh JVM a while).
        assert shard_guard.check_counter_shards(db, 16, deadline_seconds=120) == 16
        with private["firestore"].paused():
            started = time.monotonic()
            with pytest.raises(shard_guard.ShardCheckUnavailable, match="within 2s"):
                shard_guard.check_counter_shards(db, 24, deadline_seconds=2)
            assert time.monotonic() - started < 2 + 5
        assert shard_guard.check_counter_shards(db, 24, deadline_seconds=120) == 24  # resumed, it answers again
