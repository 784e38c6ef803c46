import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from route_cache import LookupTimeout, RouteCache

from shared.models import Route
from shared.store import route_from_document

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


# -- what a route keeps of a campaign's lifecycle (shared.store.route_from_document) ----------------

START, END = datetime(2026, 6, 1, tzinfo=timezone.utc), datetime(2026, 7, 1, tzinfo=timezone.utc)
STORED = {"redirect_url": "https://e.com/", "platforms": ["Android"], "platform_urls": {}, "forward_query": False,
          "status": "active", "starts_at": None, "ends_at": None, "max_clicks": None, "fallback_url": None}


def counts(document: dict[str, Any], *moments: datetime) -> list[bool]:
    route = route_from_document(document)
    return [route.counts_at(moment.timestamp()) for moment in moments]


def test_a_route_counts_clicks_from_starts_at_until_just_before_ends_at() -> None:
    dated = {**STORED, "starts_at": START, "ends_at": END}
    just_before, last = START - timedelta(microseconds=1), END - timedelta(microseconds=1)
    assert counts(dated, just_before, START, last, END) == [False, True, True, False]
    assert counts({**dated, "starts_at": None}, datetime(1990, 1, 1, tzinfo=timezone.utc), last, END) == \
        [True, True, False]
    assert counts({**dated, "ends_at": None}, just_before, datetime(2999, 1, 1, tzinfo=timezone.utc)) == [False, True]


def test_a_paused_archived_or_capped_route_counts_nothing_and_a_campaign_from_before_counts_all() -> None:
    inside = START + timedelta(days=1)
    for stopped in ({"status": "paused"}, {"status": "archived"}, {"max_clicks": 5, "counts": {"click_count": 5}},
                    {"max_clicks": 5, "counts": {"click_count": 2}, "totals": {"click_count": 3}}):
        assert counts({**STORED, **stopped}, START, inside) == [False, False], stopped
    assert counts({**STORED, "max_clicks": 5, "counts": {"click_count": 4, "bot_click_count": 9,
                                                          "inactive_click_count": 9}}, inside) == [True]
    before_lifecycle = {"redirect_url": "https://e.com/", "platforms": ["Android"]}
    assert counts(before_lifecycle, datetime(1990, 1, 1, tzinfo=timezone.utc), inside) == [True, True]
    assert route_from_document(before_lifecycle).fallback_url is None
    assert route_from_document({**STORED, "fallback_url": "https://e.com/over"}).fallback_url == "https://e.com/over"


def test_a_route_without_dates_shares_its_bounds_rather_than_holding_floats_of_its_own() -> None:
    first, second = route_from_document(dict(STORED)), route_from_document(dict(STORED))
    assert first.counts_from is second.counts_from and first.counts_until is second.counts_until
