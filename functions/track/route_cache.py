"""The track function's in-process campaign cache over Firestore.

Staleness: an admin edit or delete reaches a warm instance at most
``CACHE_TTL_SECONDS`` later; a campaign created after its id was looked up
as unknown becomes reachable at most ``NEGATIVE_CACHE_TTL_SECONDS`` later.
While Firestore cannot be read, a campaign that was cached keeps its last
known route: a Firestore outage never breaks a link that worked.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.logs import get_logger
from shared.models import Route

log = get_logger("track")

Loader = Callable[[int], Awaitable["Route | None"]]
T = TypeVar("T")


class LookupTimeout(Exception):
    """Firestore did not answer a campaign read within its deadline."""


class RouteCache:
    """TTL cache with negative entries and one read for concurrent misses on an id.

    A flood of unknown ids costs at most one Firestore read per id per
    negative TTL, and a burst of clicks on a cold campaign one read in all:
    they share that read's deadline. Reads of different ids never wait on
    each other. Memory is bounded by ``maxsize`` entries in each of the two
    maps, so unknown ids cannot push known campaigns out. Runs on one event
    loop, so it needs no lock.
    """

    def __init__(
        self,
        load: Loader,
        *,
        maxsize: int,
        ttl: float,
        negative_ttl: float,
        timeout: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.load = load
        self.maxsize = maxsize
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.timeout = timeout
        self._timer = timer
        # id -> (route, expires at), least recently used first.
        self._found: OrderedDict[int, tuple[Route, float]] = OrderedDict()
        # id -> expires at, oldest first.
        self._missing: OrderedDict[int, float] = OrderedDict()
        # Held here until done, so a running read is never garbage collected.
        self._loading: dict[int, asyncio.Task[Route | None]] = {}

    async def get(self, campaign_id: int) -> Route | None:
        """The campaign's route, None for an unknown id; raises when it cannot be known in time."""
        now = self._timer()
        found = self._found.get(campaign_id)
        if found is not None and found[1] > now:
            self._found.move_to_end(campaign_id)
            return found[0]
        missing = self._missing.get(campaign_id)
        if missing is not None and missing > now:
            return None
        loading = self._loading.get(campaign_id)
        if loading is None:
            loading = asyncio.get_running_loop().create_task(self._refresh(campaign_id))
            self._loading[campaign_id] = loading
        # Shielded: a click that goes away must not cancel the read others share.
        return await asyncio.shield(loading)

    async def _refresh(self, campaign_id: int) -> Route | None:
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    route = await self.load(campaign_id)
            except TimeoutError:
                raise LookupTimeout(f"campaign {campaign_id}: no answer from Firestore within "
                                    f"{self.timeout}s") from None
        except Exception as exc:
            stale = self._found.get(campaign_id)
            if stale is None:
                raise
            # Keep the last known route for another TTL rather than make every
            # click on it wait for a failing Firestore.
            log.error("campaign read failed; keeping its cached route",
                      extra={"campaign_id": campaign_id, "error": repr(exc)})
            self._store_found(campaign_id, stale[0])
            return stale[0]
        finally:
            del self._loading[campaign_id]
        if route is None:
            self._found.pop(campaign_id, None)
            self._put(self._missing, campaign_id, self._timer() + self.negative_ttl)
        else:
            self._missing.pop(campaign_id, None)
            self._store_found(campaign_id, route)
        return route

    def _store_found(self, campaign_id: int, route: Route) -> None:
        self._put(self._found, campaign_id, (route, self._timer() + self.ttl))

    def _put(self, entries: OrderedDict[int, T], campaign_id: int, entry: T) -> None:
        """Newest last; past ``maxsize`` the least recently stored or used entry goes."""
        entries[campaign_id] = entry
        entries.move_to_end(campaign_id)
        if len(entries) > self.maxsize:
            entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._found) + len(self._missing)
