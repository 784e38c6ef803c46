"""The registry of campaign ids issued before ids were keyed (see :mod:`shared.ids`).

Layout::

    id_registry/legacy                       {generation, chunks, count, written_at}
    id_registry/legacy-{generation}-{k}      {ids: [...]}, up to CHUNK_IDS ids each

``python -m tools.legacy_ids`` writes it once, after the admin function issues
keyed ids only: every stored campaign whose id fails the check is listed. A
rewrite puts its chunks under a new generation before it points the manifest
at them, so a reader never mixes two registries. Each track instance loads it
into a frozenset (:class:`LegacyIds`); an instance that finds none, or has
not read it yet, looks every id up, as before, so deploying the track
function first breaks no link.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from google.api_core.retry import AsyncRetry
from google.cloud import firestore

from shared.logs import get_logger

log = get_logger("legacy_ids")

REGISTRY = "id_registry"
MANIFEST = "legacy"
# 400 KB of 8-byte integers a document, well under Firestore's 1 MiB limit.
CHUNK_IDS = 50_000
# One read of the registry, retries included, never takes much longer than this.
LOAD_TIMEOUT_SECONDS = 10.0
# After a read that failed, the next is tried no sooner than this.
RETRY_SECONDS = 60.0


class RegistryUnreadable(Exception):
    """The registry could not be read whole now; a later read may."""


def _chunk_id(generation: str, k: int) -> str:
    return f"{MANIFEST}-{generation}-{k}"


async def load_registry(db: firestore.AsyncClient) -> frozenset[int] | None:
    """The legacy ids, or None when there is no registry; :class:`RegistryUnreadable` when it cannot be
    read whole now."""
    retry = AsyncRetry(timeout=LOAD_TIMEOUT_SECONDS)
    registry = db.collection(REGISTRY)
    try:
        manifest = await registry.document(MANIFEST).get(retry=retry, timeout=LOAD_TIMEOUT_SECONDS)
        if not manifest.exists:
            return None
        generation, chunks = manifest.get("generation"), int(manifest.get("chunks"))
        refs = [registry.document(_chunk_id(generation, k)) for k in range(chunks)]
        snapshots = [s async for s in db.get_all(refs, retry=retry, timeout=LOAD_TIMEOUT_SECONDS)] if refs else []
    except Exception as exc:  # without the registry a click is still served, by a lookup
        raise RegistryUnreadable(repr(exc)) from exc
    if len(snapshots) != chunks or not all(s.exists for s in snapshots):
        raise RegistryUnreadable("the registry changed while it was read")
    return frozenset(i for s in snapshots for i in s.get("ids"))


class LegacyIds:
    """A track instance's registry: read in the background from the instance's start, so that no click
    waits for it. Until a read succeeds, :meth:`current` is None and every id that fails the keyed
    check is looked up; a read that failed is tried again on the first use ``RETRY_SECONDS`` later."""

    def __init__(self, db: firestore.AsyncClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._clock = clock
        self._retry_at = 0.0
        self._read = self._start()

    def current(self) -> frozenset[int] | None:
        """The legacy ids; None while they are read, when there is no registry, or after a failed read."""
        read = self._read
        if not read.done():
            return None
        if read.cancelled() or read.exception() is not None:
            if self._clock() >= self._retry_at:
                self._read = self._start()
            return None
        return read.result()

    def cancel(self) -> None:
        self._read.cancel()

    def _start(self) -> asyncio.Task[frozenset[int] | None]:
        self._retry_at = self._clock() + RETRY_SECONDS
        read = asyncio.get_running_loop().create_task(load_registry(self._db))
        read.add_done_callback(_log_outcome)
        return read


def _log_outcome(read: asyncio.Task[frozenset[int] | None]) -> None:
    if read.cancelled():
        return
    error = read.exception()
    if error is not None:
        log.warning("legacy id registry not loaded; every campaign id is looked up until it is",
                    extra={"error": str(error), "retry_seconds": RETRY_SECONDS})
    elif read.result() is None:
        log.warning("no legacy id registry; every campaign id is looked up")


def save_registry(db: firestore.Client, ids: Iterable[int]) -> int:
    """Replace the registry with ``ids``; returns how many documents hold them."""
    ordered = sorted(set(ids))
    generation = uuid.uuid4().hex
    chunks = [ordered[k:k + CHUNK_IDS] for k in range(0, len(ordered), CHUNK_IDS)]
    registry = db.collection(REGISTRY)
    for k, chunk in enumerate(chunks):
        registry.document(_chunk_id(generation, k)).set({"ids": chunk})
    registry.document(MANIFEST).set({
        "generation": generation, "chunks": len(chunks), "count": len(ordered),
        "written_at": datetime.now(timezone.utc),
    })
    for ref in registry.list_documents():
        if ref.id != MANIFEST and not ref.id.startswith(f"{MANIFEST}-{generation}-"):
            ref.delete()  # an earlier generation's chunk
    return len(chunks)
