"""The track function's in-process campaign cache over Firestore.

Staleness: an admin edit or delete reaches a warm instance at most
``CACHE_TTL_SECONDS`` later; a campaign created after its id was looked up
as unknown becomes reachable at most ``NEGATIVE_CACHE_TTL_SECONDS`` later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from cachetools import TTLCache

from shared.models import Route

Loader = Callable[[int], "Route | None"]


class RouteCache:
    """Thread-safe TTL cache with negative entries and collapsed concurrent misses.

    A flood of unknown ids costs at most one Firestore read per id per
    negative TTL, and a burst of clicks on a cold campaign one read in all.
    Memory is bounded by ``maxsize`` entries in each of the two caches.
    """

    def __init__(
        self,
        load: Loader,
        *,
        maxsize: int,
        ttl: float,
        negative_ttl: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._found: TTLCache[int, Route] = TTLCache(maxsize, ttl, timer=timer)
        self._missing: TTLCache[int, bool] = TTLCache(maxsize, negative_ttl, timer=timer)
        self._loading: dict[int, Future[Route | None]] = {}
        self._lock = threading.Lock()

    def get(self, campaign_id: int) -> Route | None:
        with self._lock:
            route = self._found.get(campaign_id)
            if route is not None or campaign_id in self._missing:
                return route
            pending = self._loading.get(campaign_id)
            leader = pending is None
            if pending is None:
                pending = self._loading[campaign_id] = Future()
        if not leader:
            return pending.result()
        try:
            route = self._load(campaign_id)
        except BaseException as exc:
            with self._lock:
                del self._loading[campaign_id]
            pending.set_exception(exc)
            raise
        with self._lock:
            if route is None:
                self._missing[campaign_id] = True
            else:
                self._found[campaign_id] = route
            del self._loading[campaign_id]
        pending.set_result(route)
        return route

    def __len__(self) -> int:
        with self._lock:
            return len(self._found) + len(self._missing)
