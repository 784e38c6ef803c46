import threading
import time

import pytest
from route_cache import RouteCache

from shared.models import Route

ROUTE = Route("https://e.com", frozenset({"Android"}), {})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingLoader:
    """Stands in for Firestore so reads can be counted exactly."""

    def __init__(self, known: dict[int, Route], delay: float = 0.0) -> None:
        self.known = known
        self.delay = delay
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, campaign_id: int) -> Route | None:
        with self.lock:
            self.calls.append(campaign_id)
        time.sleep(self.delay)
        return self.known.get(campaign_id)


def make_cache(loader: CountingLoader, clock: Clock, maxsize: int = 100) -> RouteCache:
    return RouteCache(loader, maxsize=maxsize, ttl=30, negative_ttl=5, timer=clock)


def test_a_hit_costs_no_read_until_the_entry_expires() -> None:
    loader, clock = CountingLoader({1: ROUTE}), Clock()
    cache = make_cache(loader, clock)
    assert cache.get(1) is ROUTE and cache.get(1) is ROUTE
    assert loader.calls == [1]
    clock.now = 29.9
    cache.get(1)
    assert loader.calls == [1]
    clock.now = 30.1
    cache.get(1)
    assert loader.calls == [1, 1]


def test_unknown_ids_are_remembered_for_the_shorter_negative_ttl() -> None:
    loader, clock = CountingLoader({}), Clock()
    cache = make_cache(loader, clock)
    assert cache.get(9) is None and cache.get(9) is None
    assert loader.calls == [9]
    loader.known[9] = ROUTE  # created after the miss
    clock.now = 5.1
    assert cache.get(9) is ROUTE
    assert loader.calls == [9, 9]


def test_concurrent_misses_for_one_id_collapse_into_one_read() -> None:
    loader = CountingLoader({1: ROUTE}, delay=0.2)
    cache = make_cache(loader, Clock())
    results: list[Route | None] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(1))) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [ROUTE] * 20
    assert loader.calls == [1]


def test_a_failed_read_is_raised_to_every_waiter_and_not_cached() -> None:
    calls = []

    def failing(campaign_id: int) -> Route | None:
        calls.append(campaign_id)
        raise ConnectionError("firestore down")

    cache = RouteCache(failing, maxsize=10, ttl=30, negative_ttl=5, timer=Clock())
    for _ in range(2):
        with pytest.raises(ConnectionError):
            cache.get(1)
    assert calls == [1, 1]


def test_size_stays_bounded() -> None:
    loader = CountingLoader({i: ROUTE for i in range(1000)})
    cache = make_cache(loader, Clock(), maxsize=50)
    for i in range(2000):
        cache.get(i)
    assert len(cache) <= 100  # 50 known plus 50 unknown at most
