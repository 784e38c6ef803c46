"""The hotpath benchmark's click accounting, against the Pub/Sub emulator: drains that never sit
waiting on an empty subscription, and a settle that waits for clicks still on their way."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers import publish

from bench import hotpath, wrk
from shared.events import ClickEvent, Producer

# The drains ask for an answer at once, which the client warns is deprecated for production pulls.
pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag is deprecated:DeprecationWarning")


def clicks(count: int, referrer: str) -> list[ClickEvent]:
    producer = Producer()
    return [ClickEvent.new(7, "Android", producer=producer, referrer=referrer) for _ in range(count)]


def bench_with_one_run(project: str, topic: str, answered: int, tmp_path: Path) -> tuple[hotpath.Bench, str]:
    """A bench whose one track run had ``answered`` clicks answered to wrk, none of them in the replay log."""
    spec = hotpath.ServerSpec("track", tmp_path / "main.py", "track", {}, topic=topic, track=True)
    log_path = tmp_path / "track.log"
    log_path.write_text("")
    server = hotpath.Server(spec, 0, None, log_path, None)  # type: ignore[arg-type]  # no process: only its clicks
    bench = hotpath.Bench({"track": server}, [7], tmp_path, 0, 0.0, project)
    referrer = hotpath.RUN_REFERRER.format(0)
    load = wrk.WrkResult(requests=answered, ok=answered, errors=0, duration_s=1.0, p50_ms=1.0, p99_ms=2.0)
    hit = next(case for case in hotpath.CASES if case.name == "hit")
    bench.runs.append(hotpath.Run(hit, 64, 0, referrer, load, 0, 0.0))
    return bench, referrer


@pytest.fixture
def bench_topic(project: str) -> str:
    from local import emulators

    topic = f"bench-{uuid.uuid4().hex[:12]}"
    emulators.create_topic_and_subscription(project, topic, topic + "-sub")
    return topic


def test_a_drain_takes_all_that_waits_and_does_not_wait_on_an_empty_subscription(
    project: str, bench_topic: str
) -> None:
    sent = clicks(1050, "r")  # more than the pullers take in two rounds of 100-message answers
    publish(project, bench_topic, [event.encode() for event in sent])
    assert sorted(e.click_id for e in hotpath.pull_waiting(project, bench_topic + "-sub")) == sorted(
        e.click_id for e in sent)
    began = time.monotonic()
    assert hotpath.pull_waiting(project, bench_topic + "-sub") == []
    assert time.monotonic() - began < 5  # an open pull waited out its deadline: 3 x 10 s per drain before


def test_settle_waits_for_clicks_still_on_their_way(project: str, bench_topic: str, tmp_path: Path) -> None:
    bench, referrer = bench_with_one_run(project, bench_topic, 40, tmp_path)
    late = threading.Timer(2.0, publish, (project, bench_topic, [e.encode() for e in clicks(40, referrer)]))
    late.start()
    try:
        accounting = bench.settle()
    finally:
        late.join()
    assert (accounting.answered, accounting.published, accounting.lost) == (40, 40, 0)


def test_settle_counts_as_lost_what_has_not_come_after_its_patience(
    project: str, bench_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hotpath, "SETTLE_PATIENCE_S", 1.0)
    bench, referrer = bench_with_one_run(project, bench_topic, 40, tmp_path)
    publish(project, bench_topic, [e.encode() for e in clicks(37, referrer)])
    accounting = bench.settle()
    assert (accounting.traced, accounting.lost) == (37, 3)
