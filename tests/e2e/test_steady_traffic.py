"""End to end: ``./run.sh`` under steady clicks, its scheduled run called on a schedule, as deployed but scaled down.

Deployed, Cloud Scheduler calls the run every 60 s with a 50 s budget; here every 3 s with a 4 s budget
(``AGGREGATE_MAX_SECONDS``), while clicks arrive at a steady 1 or 10 a second. Each run must end within its
budget and leave ``as_of`` close behind its start, and ``as_of`` must keep its promise: every click answered
before it is counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from test_stack import AUTH, Stack, start_stack

BUDGET_SECONDS = 4.0
EVERY_SECONDS = 3.0
TRAFFIC_SECONDS = 15.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_path = tmp_path_factory.mktemp("steady") / "run.log"
    stack = start_stack(log_path, AGGREGATE_MAX_SECONDS=str(BUDGET_SECONDS))
    stack.log_path = log_path  # type: ignore[attr-defined]
    yield stack
    stack.stop()


@dataclass
class Run:
    started: datetime
    wall_seconds: float
    body: dict[str, object]
    counted: int
    """The campaign's click_count read right after the run."""


def click_steadily(stack: Stack, campaign_id: int, rate: float, stop: threading.Event) -> list[datetime]:
    """Clicks at ``rate`` a second until ``stop``; the moments each was answered with the campaign's URL."""
    answered, session, began, n = [], requests.Session(), time.monotonic(), 0
    while not stop.is_set():
        answer = session.get(f"{stack.url}/track/{campaign_id}?platform=Android", allow_redirects=False, timeout=10)
        assert answer.status_code == 307 and answer.headers["Location"] == "https://steady.example/"
        answered.append(datetime.now(timezone.utc))
        n += 1
        stop.wait(max(0.0, began + n / rate - time.monotonic()))
    return answered


def scheduled_runs(stack: Stack, campaign_id: int, stop: threading.Event) -> list[Run]:
    """``/tasks/update_stats`` every EVERY_SECONDS, as Cloud Scheduler calls it, until ``stop``."""
    runs = []
    while not stop.is_set():
        began, started = time.monotonic(), datetime.now(timezone.utc)
        answer = requests.get(f"{stack.url}/tasks/update_stats", auth=AUTH, timeout=60)
        wall = time.monotonic() - began
        assert answer.status_code == 200, answer.text
        campaign = requests.get(f"{stack.url}/admin/campaigns/{campaign_id}", auth=AUTH, timeout=10).json()
        runs.append(Run(started, wall, answer.json(), campaign["click_count"]))
        stop.wait(max(0.0, began + EVERY_SECONDS - time.monotonic()))
    return runs


@pytest.mark.parametrize("rate", [1.0, 10.0])
def test_under_steady_clicks_each_run_ends_within_its_budget_and_as_of_keeps_moving_and_its_promise(
    stack: Stack, rate: float
) -> None:
    created = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10,
                            json={"redirect_url": "https://steady.example/", "platforms": ["Android"]})
    campaign_id = created.json()["id"]
    stop_clicks, stop_runs = threading.Event(), threading.Event()
    answered: list[datetime] = []
    runs: list[Run] = []
    clicker = threading.Thread(target=lambda: answered.extend(click_steadily(stack, campaign_id, rate, stop_clicks)))
    scheduler = threading.Thread(target=lambda: runs.extend(scheduled_runs(stack, campaign_id, stop_runs)))
    clicker.start()
    time.sleep(1.0)
    scheduler.start()
    time.sleep(TRAFFIC_SECONDS)
    stop_runs.set()
    scheduler.join()
    stop_clicks.set()
    clicker.join()

    assert len(runs) >= TRAFFIC_SECONDS / (EVERY_SECONDS + BUDGET_SECONDS)
    for run in runs:
        assert float(str(run.body["seconds"])) <= BUDGET_SECONDS  # the run's own measure
        assert run.wall_seconds <= BUDGET_SECONDS + 3  # and as its caller sees it, with a margin for HTTP
        assert run.body["failed"] == 0
    as_ofs = [datetime.fromisoformat(str(run.body["as_of"])) for run in runs if run.body["as_of"]]
    assert len(set(as_ofs)) >= len(runs) - 1, [run.body for run in runs]  # it moves with (nearly) every run
    for run in runs[1:]:
        as_of = datetime.fromisoformat(str(run.body["as_of"]))
        assert (run.started - as_of).total_seconds() <= 3 * EVERY_SECONDS, run.body
        # The promise: every click answered before as_of (its event confirmed by then) is counted.
        unconfirmed = Path(stack.log_path).read_text().count("click event publish")  # type: ignore[attr-defined]
        assert run.counted >= sum(moment < as_of for moment in answered) - unconfirmed, run.body
    assert runs[-1].counted > 0
