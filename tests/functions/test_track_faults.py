"""The track function when Firestore or Pub/Sub stalls: every redirect still comes in bounded time.

Faults are real: private emulators paused with SIGSTOP (tests/faults.py), so
the rest of the suite's emulators keep running. Time bounds have wide margins.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import pytest
from faults import PausableEmulator, private_emulators
from google.cloud import firestore
from helpers import Track, log_lines, pulled_events, serve_track, wait_until

from local import emulators
from shared.config import Settings
from shared.events import count_events
from shared.ids import keyed_ids
from shared.store import CampaignStore
from shared.visitors import SaltKeeper

FALLBACK = "https://fallback.example/"
SHARED_READ_CLICKS = 10


@pytest.fixture(scope="module")
def private(emulator_env: dict[str, str]) -> Iterator[dict[str, PausableEmulator]]:
    with private_emulators(emulator_env["GOOGLE_CLOUD_PROJECT"], "firestore", "pubsub") as started:
        yield started


def timed(track: Track, path: str) -> tuple[Any, float]:
    started = time.monotonic()
    answer = track.click(path)
    return answer, time.monotonic() - started


def create_campaign(url: str) -> int:
    """A campaign in whichever Firestore the environment names."""
    settings = Settings.from_env()  # the id key as the function reads it
    store = CampaignStore(firestore.Client(), settings.counter_shards, keyed_ids(settings))
    return store.create({"redirect_url": url, "platforms": ["Android"]}).id


@pytest.fixture
def stalling_firestore(
    private: dict[str, PausableEmulator], pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> PausableEmulator:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", private["firestore"].host)
    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    monkeypatch.setenv("LOOKUP_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("CACHE_TTL_SECONDS", "1")
    return private["firestore"]


def test_with_firestore_stalled_a_cold_campaign_goes_to_the_fallback_within_the_deadline(
    stalling_firestore: PausableEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    cold = create_campaign("https://cold.example/")
    with serve_track() as track:
        reads = track.count_reads()
        with stalling_firestore.paused():
            started = time.monotonic()
            with ThreadPoolExecutor(SHARED_READ_CLICKS) as pool:
                answers = list(pool.map(lambda _: track.click(f"/track/{cold}?platform=Android"),
                                        range(SHARED_READ_CLICKS)))
            elapsed = time.monotonic() - started
    assert elapsed < 1 + 2  # LOOKUP_TIMEOUT_SECONDS, shared by every click on the miss
    assert [(a.status_code, a.headers["Location"]) for a in answers] == [(307, FALLBACK)] * SHARED_READ_CLICKS
    assert reads == [cold]
    lines = [line for line in caplog.records if line.getMessage().startswith("click sent to the fallback")]
    assert lines and all(r.levelname == "ERROR" and "no answer from Firestore within 1.0s" in r.getMessage()
                         for r in lines)


def test_with_firestore_stalled_a_cached_campaign_keeps_redirecting(
    stalling_firestore: PausableEmulator,
) -> None:
    cached = create_campaign("https://cached.example/")
    path = f"/track/{cached}?platform=Android"
    with serve_track() as track:
        assert track.click(path).headers["Location"] == "https://cached.example/"
        with stalling_firestore.paused():
            answer, elapsed = timed(track, path)
            assert answer.headers["Location"] == "https://cached.example/" and elapsed < 0.5  # a hit never waits
            time.sleep(1.1)  # past CACHE_TTL_SECONDS: the refresh cannot be read
            answer, elapsed = timed(track, path)
            assert answer.headers["Location"] == "https://cached.example/" and elapsed < 1 + 2
            answer, elapsed = timed(track, path)  # kept for another TTL: no wait at all
            assert answer.headers["Location"] == "https://cached.example/" and elapsed < 0.5


def test_with_firestore_stalled_the_days_first_click_waits_for_the_salt_at_most_the_deadline_and_once(
    stalling_firestore: PausableEmulator, project: str, pubsub_names: tuple[str, str],
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_TTL_SECONDS", "60")  # the route stays cached: only the salt is read
    campaign = create_campaign("https://salted.example/")
    SaltKeeper(firestore.Client(), timeout=10).keep_ahead(datetime.now(timezone.utc))  # there, but not answered
    path = f"/track/{campaign}?platform=Android"
    with serve_track() as track:
        assert track.click(path, method="HEAD").status_code == 307  # a preview: the route cached, no key needed
        with stalling_firestore.paused():
            answer, elapsed = timed(track, path)
            assert answer.headers["Location"] == "https://salted.example/" and elapsed < 1 + 2
            for _ in range(3):  # the day's read was tried: later clicks never wait for Firestore
                answer, elapsed = timed(track, path)
                assert answer.headers["Location"] == "https://salted.example/" and elapsed < 0.5
    assert [e.visitor for e in pulled_events(project, pubsub_names[1]) if not e.bot] == [""] * 4
    [line] = log_lines(caplog, "clicks counted without a visitor key: the day's salt is not to be had")
    assert line["reason"] == "no answer from Firestore within 1.0s"


def test_with_firestore_stalled_a_known_salt_keeps_keying_clicks_without_a_wait(
    stalling_firestore: PausableEmulator, project: str, pubsub_names: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_TTL_SECONDS", "60")  # the route stays cached: only the salt is read
    campaign = create_campaign("https://salted.example/")
    SaltKeeper(firestore.Client(), timeout=10).keep_ahead(datetime.now(timezone.utc))
    path = f"/track/{campaign}?platform=Android"
    with serve_track() as track:
        track.click(path)
        with stalling_firestore.paused():
            answers = [timed(track, path) for _ in range(3)]
    assert all(a.headers["Location"] == "https://salted.example/" and elapsed < 0.5 for a, elapsed in answers)
    keys = [e.visitor for e in pulled_events(project, pubsub_names[1])]
    assert len(keys) == 4 and len(set(keys)) == 1 and keys[0]


def test_a_stalled_read_of_one_id_never_holds_clicks_on_another(
    db: Any, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    monkeypatch.setenv("LOOKUP_TIMEOUT_SECONDS", "4")
    stalled, cold = random.randrange(10**9, 10**10), create_campaign("https://cold.example/")
    with serve_track() as track:
        routes = track.tracker.routes
        load = routes.load

        async def stalls_on_one_id(campaign_id: int) -> Any:
            # No emulator stalls the read of one document alone, so this read
            # of `stalled` hangs here instead; every other read is real.
            if campaign_id == stalled:
                await stall_forever()
            return await load(campaign_id)

        routes.load = stalls_on_one_id
        with ThreadPoolExecutor(2) as pool:
            stalled_click = pool.submit(track.click, f"/track/{stalled}?platform=Android")
            time.sleep(0.3)
            answer, elapsed = timed(track, f"/track/{cold}?platform=Android")
            assert answer.headers["Location"] == "https://cold.example/" and elapsed < 2
            assert stalled_click.result(timeout=4 + 2).headers["Location"] == FALLBACK


async def stall_forever() -> None:
    await asyncio.Event().wait()


@pytest.fixture
def stalling_pubsub(
    private: dict[str, PausableEmulator], db: Any, project: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[PausableEmulator, str]:
    """The private Pub/Sub with a fresh topic and subscription; returns it and the subscription."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", private["pubsub"].host)
    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    monkeypatch.setenv("PUBLISH_WAIT_SECONDS", "1")
    monkeypatch.setenv("PUBLISH_DEADLINE_SECONDS", "10")  # longer than any pause here
    suffix = f"{time.time_ns()}"
    topic, subscription = f"stall-{suffix}", f"stall-agg-{suffix}"
    emulators.create_topic_and_subscription(project, topic, subscription)
    monkeypatch.setenv("CLICKS_TOPIC", topic)
    return private["pubsub"], subscription


def record_batches(track: Track) -> list[int]:
    """The number of events in each Publish call the deployed publisher makes from now on."""
    client, sizes = track.tracker.publisher.client, []
    publish = client.publish

    async def recorded(request: Any, **kwargs: Any) -> Any:
        sizes.append(sum(count_events(message.data) for message in request.messages))
        return await publish(request=request, **kwargs)

    client.publish = recorded
    return sizes


def test_a_stalled_pubsub_costs_three_waits_then_clicks_stop_waiting_until_a_publish_is_confirmed(
    stalling_pubsub: tuple[PausableEmulator, str], project: str, caplog: pytest.LogCaptureFixture
) -> None:
    pubsub, subscription = stalling_pubsub
    campaign = create_campaign("https://c.example/")
    path = f"/track/{campaign}?platform=Android"
    with serve_track() as track:
        assert track.click(path).headers["Location"] == "https://c.example/"  # warm: cached, publisher connected
        batches = record_batches(track)
        publisher = track.tracker.publisher
        with pubsub.paused():
            for i in range(3):
                answer, elapsed = timed(track, path)
                assert answer.headers["Location"] == "https://c.example/" and 0.8 < elapsed < 1 + 1, (
                    i, elapsed, publisher.unconfirmed_in_a_row, [r.getMessage() for r in caplog.records])
            assert not publisher.waits
            for _ in range(5):
                answer, elapsed = timed(track, path)
                assert answer.headers["Location"] == "https://c.example/" and elapsed < 0.5
        assert wait_until(lambda: publisher.waits, timeout=20), "no publish confirmed after the resume"
        answer, elapsed = timed(track, path)
        assert answer.headers["Location"] == "https://c.example/" and elapsed < 1
        assert publisher.unconfirmed_in_a_row == 0
        assert wait_until(lambda: publisher.buffered == (0, 0), timeout=20)

    lines = log_lines(caplog, "click event publish outcome unknown")
    assert len(lines) == 3 and all(line["severity"] == "ERROR" and line["outcome"] == "unknown" for line in lines)
    for line in lines:
        assert set(line["event"]) == {"click_id", "campaign_id", "platform", "ts", "user_agent", "referrer", "bot",
                                      "producer", "seq", "v"}
        assert line["click_id"] == line["event"]["click_id"] and line["event"]["campaign_id"] == campaign
        assert line["topic"].endswith("/topics/" + pubsub_topic(line)) and "NotConfirmed" in line["error"]
    events = pulled_events(project, subscription)
    assert len(events) == 1 + 3 + 5 + 1  # every click landed in the end, the three logged ones too
    assert {line["click_id"] for line in lines} <= {e.click_id for e in events}
    assert max(batches) > 1  # clicks that came during a stalled call shared the next one


def pubsub_topic(line: dict[str, Any]) -> str:
    return str(line["topic"]).rsplit("/", 1)[-1]


def test_past_the_buffer_bound_events_go_straight_to_the_log_as_failed(
    stalling_pubsub: tuple[PausableEmulator, str], project: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pubsub, subscription = stalling_pubsub
    monkeypatch.setenv("PUBLISH_WAIT_SECONDS", "0.3")
    monkeypatch.setenv("PUBLISH_BUFFER_MAX_MESSAGES", "3")
    campaign = create_campaign("https://c.example/")
    path = f"/track/{campaign}?platform=Android"
    with serve_track() as track:
        track.click(path)
        publisher = track.tracker.publisher
        with pubsub.paused():
            answers = [timed(track, path) for _ in range(5)]
            assert publisher.buffered[0] == 3
        assert all(a.headers["Location"] == "https://c.example/" for a, _ in answers)
        assert all(elapsed < 0.3 + 0.5 for _, elapsed in answers[3:])  # past the bound: no wait at all
        assert wait_until(lambda: publisher.buffered == (0, 0), timeout=20)
    failed = log_lines(caplog, "click event publish failed")
    assert len(failed) == 2 and all(line["outcome"] == "failed" and "BufferFull" in line["error"] for line in failed)
    published = {e.click_id for e in pulled_events(project, subscription)}
    assert len(published) == 1 + 3
    assert not {line["click_id"] for line in failed} & published  # "failed" is exact: never published


def test_a_publish_call_carries_at_most_the_batch_bound(
    stalling_pubsub: tuple[PausableEmulator, str], project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pubsub, subscription = stalling_pubsub
    monkeypatch.setenv("PUBLISH_WAIT_SECONDS", "0.2")
    monkeypatch.setenv("PUBLISH_BATCH_MAX_MESSAGES", "4")
    campaign = create_campaign("https://c.example/")
    path = f"/track/{campaign}?platform=Android"
    with serve_track() as track:
        track.click(path)
        batches = record_batches(track)
        publisher = track.tracker.publisher
        with pubsub.paused():
            for _ in range(3 + 9):  # three waits, then nine clicks queued behind the stalled call
                track.click(path)
        assert wait_until(lambda: publisher.buffered == (0, 0), timeout=20)
    assert sum(batches) == 3 + 9 and max(batches) == 4
    assert len(pulled_events(project, subscription)) == 1 + 3 + 9
