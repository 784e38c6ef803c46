"""The registry of ids issued before ids were keyed, on the Firestore emulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from faults import private_emulators
from google.cloud import firestore

from shared import legacy_ids
from shared.legacy_ids import LegacyIds, RegistryUnreadable, load_registry, save_registry


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(legacy_ids, "CHUNK_IDS", 10)  # so that a few ids span several documents
    return 10


def registry_documents(db: Any) -> list[str]:
    return sorted(s.id for s in db.collection(legacy_ids.REGISTRY).stream())


def load(db: Any) -> frozenset[int] | None:
    """The registry as a track instance loads it: through an async client of the same project."""
    return asyncio.run(load_registry(firestore.AsyncClient(project=db.project)))


def test_no_registry_loads_as_none(db: Any) -> None:
    assert load(db) is None


def test_an_empty_registry_loads_as_an_empty_set(db: Any) -> None:
    assert save_registry(db, []) == 0
    assert load(db) == frozenset()


def test_a_registry_spans_documents_and_a_rewrite_replaces_it_whole(db: Any, small_chunks: int) -> None:
    first = set(range(1000, 1025))
    assert save_registry(db, first) == 3
    assert load(db) == first
    assert save_registry(db, [7, 8, 9]) == 1
    assert load(db) == {7, 8, 9}
    assert len(registry_documents(db)) == 2  # the manifest and one chunk: the first generation is gone


def test_a_registry_missing_a_chunk_is_not_trusted(db: Any, small_chunks: int) -> None:
    save_registry(db, range(30))
    chunk = next(name for name in registry_documents(db) if name != legacy_ids.MANIFEST)
    db.collection(legacy_ids.REGISTRY).document(chunk).delete()
    with pytest.raises(RegistryUnreadable):  # so every id is looked up, and no legacy link breaks
        load(db)


def test_an_unreachable_firestore_leaves_every_id_to_a_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    from local.emulators import free_port

    monkeypatch.setattr(legacy_ids, "LOAD_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # a closed port
    started = time.monotonic()
    with pytest.raises(RegistryUnreadable):
        asyncio.run(load_registry(firestore.AsyncClient(project="demo-unreachable")))
    assert time.monotonic() - started < 10  # bounded by the load's deadline, with a wide margin


def test_a_read_that_failed_is_tried_again_a_minute_later(project: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(legacy_ids, "LOAD_TIMEOUT_SECONDS", 1.0)
    now = [0.0]

    async def scenario(firestore_emulator: Any) -> list[frozenset[int] | None]:
        registry = LegacyIds(firestore.AsyncClient(project=project), clock=lambda: now[0])
        seen = [registry.current()]  # still reading
        await asyncio.sleep(legacy_ids.LOAD_TIMEOUT_SECONDS + 2)  # Firestore stalled: the read fails
        firestore_emulator.resume()
        seen.append(registry.current())
        await asyncio.sleep(1)
        seen.append(registry.current())  # not tried again yet
        now[0] = legacy_ids.RETRY_SECONDS
        seen.append(registry.current())  # tried again now
        for _ in range(100):
            await asyncio.sleep(0.05)
            if registry.current() is not None:
                break
        seen.append(registry.current())
        registry.cancel()
        return seen

    with private_emulators(project, "firestore") as started:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", started["firestore"].host)
        save_registry(firestore.Client(project=project), [7, 8])
        started["firestore"].pause()
        assert asyncio.run(scenario(started["firestore"])) == [None, None, None, None, frozenset({7, 8})]
