import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from route_cache import LookupTimeout, RouteCache

from shared.models import Route

ROUTE = Route("https://e.com", frozenset({"Android"}), {})
EDITED = Route("https://edited.com", frozenset({"Android"}), {})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingLoader:
    """Stands in for Firestore so reads can be counted exactly (function tests use the real one)."""

    def __init__(self, known: dict[int, Route], delay: float = 0.0) -> None:
        self.known = known
        self.delay = delay
        self.calls: list[int] = []
        self.error: Exception | None = None

    async def __call__(self, campaign_id: int) -> Route | None:
        self.calls.append(campaign_id)
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.known.get(campaign_id)


def make_cache(loader: CountingLoader, clock: Clock, maxsize: int = 100, timeout: float = 5) -> RouteCache:
    return RouteCache(loader, maxsize=maxsize, ttl=30, negative_ttl=5, timeout=timeout, timer=clock)


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(test())


def test_a_hit_costs_no_read_until_the_entry_expires() -> None:
    loader, clock = CountingLoader({1: ROUTE}), Clock()
    cache = make_cache(loader, clock)

    async def clicks() -> None:
        assert await cache.get(1) is ROUTE and await cache.get(1) is ROUTE
        assert loader.calls == [1]
        clock.now = 29.9
        await cache.get(1)
        assert loader.calls == [1]
        clock.now = 30.1
        await cache.get(1)
        assert loader.calls == [1, 1]

    run(clicks)


def test_unknown_ids_are_remembered_for_the_shorter_negative_ttl() -> None:
    loader, clock = CountingLoader({}), Clock()
    cache = make_cache(loader, clock)

    async def clicks() -> None:
        assert await cache.get(9) is None and await cache.get(9) is None
        assert loader.calls == [9]
        loader.known[9] = ROUTE  # created after the miss
        clock.now = 5.1
        assert await cache.get(9) is ROUTE
        assert loader.calls == [9, 9]

    run(clicks)


def test_concurrent_misses_for_one_id_collapse_into_one_read() -> None:
    loader = CountingLoader({1: ROUTE}, delay=0.2)
    cache = make_cache(loader, Clock())

    async def clicks() -> None:
        assert await asyncio.gather(*(cache.get(1) for _ in range(20))) == [ROUTE] * 20
        assert loader.calls == [1]

    run(clicks)


def test_clicks_sharing_a_miss_share_its_deadline() -> None:
    loader = CountingLoader({1: ROUTE}, delay=10)
    cache = make_cache(loader, Clock(), timeout=0.3)

    async def clicks() -> None:
        first = asyncio.ensure_future(cache.get(1))
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(first, cache.get(1), return_exceptions=True)
        assert all(isinstance(r, LookupTimeout) for r in results)
        assert asyncio.get_running_loop().time() - started < 0.3  # the late click waited only what was left
        assert loader.calls == [1]

    run(clicks)


def test_a_failed_read_is_raised_to_every_waiter_and_not_cached() -> None:
    loader = CountingLoader({})
    loader.error = ConnectionError("firestore down")
    cache = make_cache(loader, Clock())

    async def clicks() -> None:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await cache.get(1)
        assert loader.calls == [1, 1]

    run(clicks)


def test_a_cached_campaign_keeps_its_route_while_firestore_fails() -> None:
    loader, clock = CountingLoader({1: ROUTE}), Clock()
    cache = make_cache(loader, clock)

    async def clicks() -> None:
        assert await cache.get(1) is ROUTE
        clock.now = 31
        loader.error = ConnectionError("firestore down")
        assert await cache.get(1) is ROUTE
        assert await cache.get(1) is ROUTE  # kept for another TTL: no read, no wait
        assert loader.calls == [1, 1]
        clock.now = 62
        loader.error, loader.known[1] = None, EDITED
        assert await cache.get(1) is EDITED

    run(clicks)


def test_a_click_that_goes_away_does_not_cancel_the_shared_read() -> None:
    loader = CountingLoader({1: ROUTE}, delay=0.2)
    cache = make_cache(loader, Clock())

    async def clicks() -> None:
        gone, staying = asyncio.ensure_future(cache.get(1)), asyncio.ensure_future(cache.get(1))
        await asyncio.sleep(0.05)
        gone.cancel()
        assert await staying is ROUTE
        assert loader.calls == [1]

    run(clicks)


def test_size_stays_bounded() -> None:
    loader = CountingLoader({i: ROUTE for i in range(1000)})
    cache = make_cache(loader, Clock(), maxsize=50)

    async def clicks() -> None:
        for i in range(2000):
            await cache.get(i)

    run(clicks)
    assert len(cache) <= 100  # 50 known plus 50 unknown at most
