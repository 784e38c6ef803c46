"""The registry of ids issued before ids were keyed, on the Firestore emulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from google.cloud import firestore

from shared import legacy_ids
from shared.legacy_ids import load_registry, save_registry


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
    assert load(db) is None  # so every id is looked up, and no legacy link breaks


def test_an_unreachable_firestore_leaves_every_id_to_a_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    from local.emulators import free_port

    monkeypatch.setattr(legacy_ids, "LOAD_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # a closed port
    started = time.monotonic()
    assert asyncio.run(load_registry(firestore.AsyncClient(project="demo-unreachable"))) is None
    assert time.monotonic() - started < 10  # bounded by the load's deadline, with a wide margin
