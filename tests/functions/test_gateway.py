"""The one-port gateway of ./run.sh, in process: what it adds over the functions."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from starlette.testclient import TestClient

from local.gateway import create_gateway


def test_the_drain_endpoint_limits_failed_logins_like_the_admin_api(
    db: Any, pubsub_names: tuple[str, str], admin_env: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "2")
    gateway = create_gateway()
    client = TestClient(gateway)
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:guess").decode()}
    right = {"Authorization": "Basic " + base64.b64encode(":".join(admin_env).encode()).decode()}
    for _ in range(2):
        assert client.get("/tasks/update_stats", headers=wrong).status_code == 401
    answer = client.get("/tasks/update_stats", headers=right)
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    other = TestClient(gateway, client=("198.51.100.9", 50000)).get("/tasks/update_stats", headers=right)
    assert other.status_code == 200 and other.json()["status"] == "Updated"
