import base64

import flask
import pytest

from shared.errors import TooManyRequests, Unauthorized
from shared.login_limiter import LoginLimiter

app = flask.Flask(__name__)
WRONG = {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(limiter: LoginLimiter, address: str) -> type[Exception]:
    with app.test_request_context(headers=WRONG, environ_base={"REMOTE_ADDR": address}):
        with pytest.raises((Unauthorized, TooManyRequests)) as raised:
            limiter.require_basic_auth(flask.request, "admin", "Secret")
        return raised.type


def test_memory_stays_bounded_however_many_clients_fail() -> None:
    limiter = LoginLimiter(3, 60, behind_google_front_end=False, max_clients=100)
    for n in range(5000):
        fail(limiter, f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100


def test_the_window_counts_from_the_first_failure_and_retry_after_counts_down() -> None:
    clock = Clock()
    limiter = LoginLimiter(2, 60, behind_google_front_end=False, timer=clock)
    assert fail(limiter, "10.0.0.1") is Unauthorized
    clock.now += 50
    assert fail(limiter, "10.0.0.1") is Unauthorized
    with (app.test_request_context(headers=WRONG, environ_base={"REMOTE_ADDR": "10.0.0.1"}),
          pytest.raises(TooManyRequests) as raised):
        limiter.require_basic_auth(flask.request, "admin", "Secret")
    assert raised.value.status == 429 and raised.value.headers == {"Retry-After": "10"}
    clock.now += 10
    assert fail(limiter, "10.0.0.1") is Unauthorized  # a new window
    assert len(limiter) == 1
