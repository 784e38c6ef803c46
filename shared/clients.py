"""Google Cloud clients, created lazily once per instance, replaceable in tests.

The official clients find the local emulators through ``FIRESTORE_EMULATOR_HOST``
and ``PUBSUB_EMULATOR_HOST``; nothing here knows about them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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
