"""The registry of campaign ids issued before ids were keyed (see :mod:`shared.ids`).

Layout::

    id_registry/legacy                       {generation, chunks, count, written_at}
    id_registry/legacy-{generation}-{k}      {ids: [...]}, up to CHUNK_IDS ids each

``python -m tools.legacy_ids`` writes it once, after the admin function issues
keyed ids only: every stored campaign whose id fails the check is listed. A
rewrite puts its chunks under a new generation before it points the manifest
at them, so a reader never mixes two registries. Each track instance loads it
once into a frozenset; an instance that finds none looks every id up, as
before, so deploying the track function first breaks no link.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timezone

from google.api_core.retry import AsyncRetry
from google.cloud import firestore

from shared.logs import get_logger

log = get_logger("legacy_ids")

REGISTRY = "id_registry"
MANIFEST = "legacy"
# 400 KB of 8-byte integers a document, well under Firestore's 1 MiB limit.
CHUNK_IDS = 50_000
# A track instance loads the registry as it starts, and its first click waits
# for it: retries included, never much longer than this.
LOAD_TIMEOUT_SECONDS = 10.0


def _chunk_id(generation: str, k: int) -> str:
    return f"{MANIFEST}-{generation}-{k}"


async def load_registry(db: firestore.AsyncClient) -> frozenset[int] | None:
    """The legacy ids, or None when there is no registry or it cannot be read now."""
    retry = AsyncRetry(timeout=LOAD_TIMEOUT_SECONDS)
    registry = db.collection(REGISTRY)
    try:
        manifest = await registry.document(MANIFEST).get(retry=retry, timeout=LOAD_TIMEOUT_SECONDS)
        if not manifest.exists:
            log.warning("no legacy id registry; every campaign id is looked up")
            return None
        generation, chunks = manifest.get("generation"), int(manifest.get("chunks"))
        refs = [registry.document(_chunk_id(generation, k)) for k in range(chunks)]
        snapshots = [s async for s in db.get_all(refs, retry=retry, timeout=LOAD_TIMEOUT_SECONDS)] if refs else []
    except Exception as exc:  # without the registry a click is still served, by a lookup
        log.warning("legacy id registry not loaded; every campaign id is looked up", extra={"error": repr(exc)})
        return None
    if len(snapshots) != chunks or not all(s.exists for s in snapshots):
        log.warning("legacy id registry changed while loading; every campaign id is looked up")
        return None
    return frozenset(i for s in snapshots for i in s.get("ids"))


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
