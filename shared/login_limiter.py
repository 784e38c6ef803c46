"""Failed basic-auth attempts, limited per client and per instance.

After ``max_failures`` wrong credentials from one client within a window
(counted from that client's first failure), every request from it answers
429 with ``Retry-After`` until the window ends, right credentials included:
otherwise a guess that succeeds would still stand out from the refused ones
and guessing would go on at full speed. Requests without an ``Authorization``
header (a browser before its login prompt) and successful logins do not count.

Memory is bounded: at most ``max_clients`` clients are remembered, each
forgotten when its window ends. Limits are per instance, so a client may make
``max_failures`` attempts per window on each instance that serves it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import flask
from cachetools import TTLCache

from shared.addresses import client_address
from shared.config import Settings
from shared.errors import TooManyRequests, Unauthorized
from shared.http import require_basic_auth

# About 100 bytes a client: a megabyte at most.
MAX_CLIENTS = 10_000


@dataclass
class _Failures:
    count: int
    since: float


class LoginLimiter:
    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        *,
        behind_google_front_end: bool,
        max_clients: int = MAX_CLIENTS,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.behind_google_front_end = behind_google_front_end
        self._timer = timer
        # An entry is never re-set, only updated in place, so it expires one
        # window after the client's first failure however many follow.
        self._failures: TTLCache[str, _Failures] = TTLCache(max_clients, window_seconds, timer=timer)
        self._lock = threading.Lock()

    def require_basic_auth(self, request: flask.Request, user: str, password: str) -> None:
        """:func:`shared.http.require_basic_auth`, refused with 429 for a client over its limit."""
        client = client_address(request.headers.get("X-Forwarded-For", ""), request.remote_addr,
                                behind_google_front_end=self.behind_google_front_end)
        with self._lock:
            failures = self._failures.get(client)
            if failures is not None and failures.count >= self.max_failures:
                wait = max(1, math.ceil(failures.since + self.window_seconds - self._timer()))
                raise TooManyRequests(f"Too many failed logins; try again in {wait} seconds.", wait)
        try:
            require_basic_auth(request, user, password)
        except Unauthorized:
            if "Authorization" in request.headers:
                self._failed(client)
            raise

    def _failed(self, client: str) -> None:
        with self._lock:
            failures = self._failures.get(client)
            if failures is None:
                self._failures[client] = _Failures(1, self._timer())
            else:
                failures.count += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._failures)


def login_limiter(settings: Settings) -> LoginLimiter:
    return LoginLimiter(
        settings.login_max_failures,
        settings.login_window_seconds,
        behind_google_front_end=settings.k_service is not None,
    )
