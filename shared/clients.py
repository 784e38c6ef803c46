"""Google Cloud clients, created lazily once per instance, replaceable in tests.

The official clients find the local emulators through ``FIRESTORE_EMULATOR_HOST``
and ``PUBSUB_EMULATOR_HOST``; nothing here knows about them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Lazy(Generic[T]):
    """A value built on first use, once, even when first used by many threads at once."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._factory()
                value = self._value
        return value

    def built(self) -> T | None:
        """The value if it was built, without building it."""
        return self._value

    def set(self, value: T | None) -> None:
        """Inject a value (tests), or ``None`` to build afresh on next use."""
        with self._lock:
            self._value = value


class AsyncLazy(Generic[T]):
    """A value built by a coroutine on first use, once, even when first awaited by many requests at once.

    Runs on one event loop, so it needs no lock. A build that fails is tried
    again on next use.
    """

    def __init__(self, factory: Callable[[], Awaitable[T]]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._building: asyncio.Task[T] | None = None

    async def get(self) -> T:
        value = self._value
        if value is not None:
            return value
        if self._building is None:
            self._building = asyncio.get_running_loop().create_task(self._build())
        # Shielded: a request that goes away must not cancel the build others wait for.
        return await asyncio.shield(self._building)

    def built(self) -> T | None:
        """The value if it was built, without building it."""
        return self._value

    def set(self, value: T | None) -> None:
        """Inject a value (tests), or ``None`` to build afresh on next use."""
        self._value = value

    async def _build(self) -> T:
        try:
            value = await self._factory()
        finally:
            self._building = None
        self._value = value
        return value
