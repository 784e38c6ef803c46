"""The track function as deployed (the app functions-framework builds for it), over both emulators.

Settings come from the environment and the app is built from main.py, as on
Cloud Run; Starlette's test client drives it on one event loop per test.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import function_app
from helpers import Track, events_in, log_lines, pull_all, pulled_events, serve_track, wait_until

from shared.config import Settings
from shared.events import ClickEvent
from shared.ids import keyed_ids
from shared.logs import JsonFormatter
from shared.store import CampaignStore
from shared.visitors import SaltKeeper, salt_day, salt_id, visitor_key

FALLBACK = "https://fallback.example/"


@pytest.fixture
def store(db: Any) -> CampaignStore:
    settings = Settings.from_env()  # the key as the functions read it
    return CampaignStore(db, settings.counter_shards, keyed_ids(settings))


@pytest.fixture
def campaign(store: CampaignStore) -> Any:
    return store.create({
        "redirect_url": "https://github.com/otobrglez/o7tracker",
        "platforms": ["Android", "IPhone"],
        "platform_urls": {"IPhone": "https://apps.apple.com/app/id1"},
    })


@pytest.fixture
def track(db: Any, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Track]:
    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    # These tests read what was published right after the clicks: on a busy
    # machine a publish may take longer than the 1 s a click waits by default
    # (tests/functions/test_track_faults.py is where the wait itself is tested).
    monkeypatch.setenv("PUBLISH_WAIT_SECONDS", "10")
    with serve_track() as track:
        yield track


def test_a_click_redirects_uncached_and_publishes_one_event(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str]
) -> None:
    before = datetime.now(timezone.utc)
    answer = track.click(f"/track/{campaign.id}?platform=Android", **{"User-Agent": "UA/1", "Referer": "https://ref/"})
    assert answer.status_code == 307
    assert answer.headers["Location"] == "https://github.com/otobrglez/o7tracker"
    assert answer.headers["Cache-Control"] == "no-store"
    [event] = pulled_events(project, pubsub_names[1])
    assert (event.campaign_id, event.platform, event.user_agent, event.referrer) == (
        campaign.id, "Android", "UA/1", "https://ref/")
    assert before <= event.ts <= datetime.now(timezone.utc)
    assert not event.bot and len(event.click_id) == 32


def test_a_platform_url_wins_over_the_redirect_url(track: Track, campaign: Any) -> None:
    answer = track.click(f"/track/{campaign.id}?platform=IPhone")
    assert answer.headers["Location"] == "https://apps.apple.com/app/id1"


CLICK_QUERY = "gclid=Cj0KCQ-x_Y&utm_campaign=evil&q=red%20shoes&r=a+b&s=1%2B1&tag=a&tag=b&u=%C3%BC"


def test_without_forward_query_the_clicks_parameters_stay_behind(track: Track, campaign: Any) -> None:
    answer = track.click(f"/track/{campaign.id}?platform=Android&{CLICK_QUERY}")
    assert answer.headers["Location"] == "https://github.com/otobrglez/o7tracker"


def test_forward_query_carries_the_clicks_parameters_to_the_destination(
    track: Track, store: CampaignStore, project: str, pubsub_names: tuple[str, str]
) -> None:
    forwarding = store.create({
        "redirect_url": "https://shop.example/spring?utm_campaign=spring#offer",
        "platforms": ["Android", "IPhone"],
        "platform_urls": {"IPhone": "https://apps.apple.com/app/id1?pt=42"},
        "forward_query": True,
    })
    answer = track.click(f"/track/{forwarding.id}?platform=Android&{CLICK_QUERY}")
    assert (answer.status_code, answer.headers["Location"]) == (307, (
        "https://shop.example/spring?utm_campaign=spring"
        "&gclid=Cj0KCQ-x_Y&q=red%20shoes&r=a+b&s=1%2B1&tag=a&tag=b&u=%C3%BC#offer"))
    # to a platform's own destination too, the platform told by the User-Agent
    answer = track.click(f"/track/{forwarding.id}?fbclid=IwAR1&ttclid=E.C.P", **{"User-Agent": IPHONE_UA})
    assert answer.headers["Location"] == "https://apps.apple.com/app/id1?pt=42&fbclid=IwAR1&ttclid=E.C.P"
    # a click that cannot count still goes to the fallback as it is
    assert track.click(f"/track/{forwarding.id}?platform=BlackBerry&gclid=x").headers["Location"] == FALLBACK
    assert [e.platform for e in pulled_events(project, pubsub_names[1])] == ["Android", "IPhone"]


def test_every_click_is_a_separate_event(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str]
) -> None:
    for platform in ("Android", "IPhone", "Android"):
        assert track.click(f"/track/{campaign.id}?platform={platform}").status_code == 307
    events = pulled_events(project, pubsub_names[1])
    assert sorted(e.platform for e in events) == ["Android", "Android", "IPhone"]
    assert len({e.click_id for e in events}) == 3


@pytest.mark.parametrize("path", [
    "/", "/track", "/track/", "/track/{id}", "/track/{id}?platform=", "/track/{id}?platform=android",
    "/track/{id}?platform=BlackBerry", "/track/abc?platform=Android",
    "/track/-5?platform=Android", "/track/0?platform=Android", "/track/9007199254740992?platform=Android",
    "/track/123?platform=Android", "/track/{id}/extra?platform=Android", "/elsewhere?platform=Android",
    "/robots.txt", "/favicon.ico", "/track/{id}%0A?platform=Android", "/track/1%0A2?platform=Android",
    "/track/%00{id}?platform=Android", "/track/{id}%0D%0ASet-Cookie:%20x=1?platform=Android",
])
def test_links_that_cannot_count_go_to_the_fallback_and_publish_nothing(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str], path: str
) -> None:
    answer = track.click(path.format(id=campaign.id))
    assert answer.status_code == 307
    assert answer.headers["Location"] == FALLBACK
    assert answer.headers["Cache-Control"] == "no-store"
    assert pulled_events(project, pubsub_names[1]) == []


def test_the_default_fallback_is_the_original_one(
    db: Any, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FALLBACK_URL", raising=False)
    with serve_track() as track:
        answer = track.click("/track/1?platform=Android")
        assert answer.status_code == 307 and answer.headers["Location"] == "http://outfit7.com"


def test_a_function_that_raises_still_redirects_to_the_fallback(
    track: Track, caplog: pytest.LogCaptureFixture
) -> None:
    # A fake, because the tracker never raises for a real fault: it stands
    # for a bug, which must cost the click its count, not its redirect.
    class Broken:
        async def click(self, request: Any) -> str:
            raise RuntimeError("a bug")

        async def aclose(self) -> None:
            pass

    track.main.tracker.set(Broken())
    answer = track.click("/track/1?platform=Android")
    assert (answer.status_code, answer.headers["Location"]) == (307, FALLBACK)
    [line] = log_lines(caplog, "click sent to the fallback: RuntimeError('a bug')")
    assert line["severity"] == "ERROR" and line["path"] == "/track/1"
    assert line["logging.googleapis.com/labels"]["execution_id"]  # in the framework's execution context


def test_an_instance_whose_start_fails_still_redirects_and_starts_again_on_a_click(
    campaign: Any, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    tmp_path: Any,
) -> None:
    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    pubsub = os.environ["PUBSUB_EMULATOR_HOST"]
    # Deployed without credentials, the Pub/Sub client cannot be made.
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    path = f"/track/{campaign.id}?platform=Android"
    with serve_track() as track:
        [line] = log_lines(caplog, "the instance's startup hook failed")
        assert line["severity"] == "ERROR" and "DefaultCredentialsError" in line["exception"]
        assert track.click(path).headers["Location"] == FALLBACK
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub)
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
        assert track.click(path).headers["Location"] == campaign.redirect_url


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_only_get_is_a_click_and_head_a_preview(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str], method: str
) -> None:
    answer = track.click(f"/track/{campaign.id}?platform=Android", method=method)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, HEAD"
    assert pulled_events(project, pubsub_names[1]) == []


def test_a_refused_publish_still_redirects_and_logs_a_replayable_line(
    track: Track, campaign: Any, project: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    topic = "no-such-topic-" + str(time.time_ns())  # the emulator answers NOT_FOUND
    monkeypatch.setenv("CLICKS_TOPIC", topic)
    with serve_track() as refused:
        answer = refused.click(f"/track/{campaign.id}?platform=IPhone", **{"User-Agent": "UA/2", "Referer": "r"})
        assert answer.status_code == 307
        assert answer.headers["Location"] == "https://apps.apple.com/app/id1"
    [line] = log_lines(caplog, "click event publish failed")
    assert line["severity"] == "ERROR" and line["logger"] == "o7tracker.publishing"
    assert line["outcome"] == "failed" and "NotFound" in line["error"]
    assert line["topic"] == f"projects/{project}/topics/{topic}"
    event = line["event"]
    assert set(event) == {"click_id", "campaign_id", "platform", "ts", "user_agent", "referrer", "bot", "producer",
                          "seq", "v"}
    assert (event["campaign_id"], event["platform"], event["user_agent"], event["referrer"], event["bot"]) == (
        campaign.id, "IPhone", "UA/2", "r", False)
    assert line["click_id"] == event["click_id"]


def test_the_cache_reads_firestore_once_per_campaign_per_ttl(
    campaign: Any, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHE_TTL_SECONDS", "0.5")
    monkeypatch.setenv("NEGATIVE_CACHE_TTL_SECONDS", "0.5")
    with serve_track() as track:
        reads = track.count_reads()
        for _ in range(5):
            track.click(f"/track/{campaign.id}?platform=Android")
            track.click("/track/424242?platform=Android")
        assert sorted(reads) == sorted([campaign.id, 424242])  # one miss for each id, then hits
        time.sleep(0.6)
        track.click(f"/track/{campaign.id}?platform=Android")
        assert len(reads) == 3


def test_the_positive_and_negative_ttls_apply_each_to_its_own(
    db: Any, campaign: Any, store: CampaignStore, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    monkeypatch.setenv("CACHE_TTL_SECONDS", "4")
    monkeypatch.setenv("NEGATIVE_CACHE_TTL_SECONDS", "0.5")
    from shared.store import campaign_ref

    unknown = random.randrange(10**9, 10**10)
    with serve_track() as track:
        path = f"/track/{campaign.id}?platform=Android"
        assert track.click(path).headers["Location"] == "https://github.com/otobrglez/o7tracker"
        assert track.click(f"/track/{unknown}?platform=Android").headers["Location"] == FALLBACK
        store.update(campaign.id, {"redirect_url": "https://edited.example/"})
        campaign_ref(db, unknown).set({"redirect_url": "https://late.example/", "platforms": ["Android"]})
        time.sleep(1.0)
        assert track.click(f"/track/{unknown}?platform=Android").headers["Location"] == "https://late.example/"
        assert track.click(path).headers["Location"] == "https://github.com/otobrglez/o7tracker"  # within its TTL


def test_edits_and_deletes_reach_the_track_function_after_the_ttl(
    campaign: Any, store: CampaignStore, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    monkeypatch.setenv("CACHE_TTL_SECONDS", "0.5")
    monkeypatch.setenv("NEGATIVE_CACHE_TTL_SECONDS", "0.5")
    with serve_track() as track:
        path = f"/track/{campaign.id}?platform=Android"
        assert track.click(path).headers["Location"] == "https://github.com/otobrglez/o7tracker"
        store.update(campaign.id, {"redirect_url": "https://edited.example/"})
        assert track.click(path).headers["Location"] == "https://github.com/otobrglez/o7tracker"  # stale, by design
        time.sleep(0.6)
        assert track.click(path).headers["Location"] == "https://edited.example/"
        store.delete(campaign.id)
        time.sleep(0.6)
        assert track.click(path).headers["Location"] == FALLBACK


def test_an_unreachable_firestore_sends_to_the_fallback_in_time(
    campaign: Any, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from local.emulators import free_port

    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("LOOKUP_TIMEOUT_SECONDS", "1")
    with serve_track() as track:
        # Nor does the legacy-id registry's read, retried for 10 s, hold any click: one whose id
        # passes its check, or one whose id fails it (looked up while the registry is unknown).
        for campaign_id in (campaign.id, campaign.id + 1 if not track.tracker.ids.verify(campaign.id + 1)
                            else campaign.id + 2):
            started = time.monotonic()
            answer = track.click(f"/track/{campaign_id}?platform=Android")
            assert time.monotonic() - started < 1 + 2
            assert answer.status_code == 307 and answer.headers["Location"] == FALLBACK
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records
             if r.getMessage().startswith("click sent to the fallback")]
    assert lines[0]["severity"] == "ERROR" and lines[0]["path"] == f"/track/{campaign.id}"


IPHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
ANDROID_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0.0.0 Mobile Safari/537.36")
IPAD_UA = ("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.5 Mobile/15E148 Safari/604.1")
SLACK_UA = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"


def test_without_a_platform_parameter_the_user_agent_decides(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str]
) -> None:
    assert track.click(f"/track/{campaign.id}", **{"User-Agent": IPHONE_UA}).headers["Location"] == \
        "https://apps.apple.com/app/id1"
    assert track.click(f"/track/{campaign.id}", **{"User-Agent": ANDROID_UA}).headers["Location"] == \
        "https://github.com/otobrglez/o7tracker"
    assert track.click(f"/track/{campaign.id}", **{"User-Agent": IPAD_UA}).headers["Location"] == FALLBACK
    events = pulled_events(project, pubsub_names[1])
    assert sorted(e.platform for e in events) == ["Android", "IPhone"]
    assert not any(e.bot for e in events)


def test_an_explicit_platform_wins_over_the_user_agent(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str]
) -> None:
    answer = track.click(f"/track/{campaign.id}?platform=Android", **{"User-Agent": IPHONE_UA})
    assert answer.headers["Location"] == "https://github.com/otobrglez/o7tracker"
    assert [e.platform for e in pulled_events(project, pubsub_names[1])] == ["Android"]


def test_a_command_line_client_with_a_platform_is_a_normal_click(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str]
) -> None:
    answer = track.click(f"/track/{campaign.id}?platform=IPhone", **{"User-Agent": "curl/8.5.0"})
    assert answer.status_code == 307
    [event] = pulled_events(project, pubsub_names[1])
    assert (event.platform, event.bot) == ("IPhone", False)


@pytest.mark.parametrize("method, user_agent, query", [
    ("GET", SLACK_UA, ""),
    ("GET", "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "?platform=Android"),
    ("GET", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", ""),
    ("HEAD", IPHONE_UA, ""),
    ("HEAD", "curl/8.5.0", "?platform=Android"),
])
def test_bots_and_previews_get_the_redirect_but_are_marked_apart(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str], method: str, user_agent: str, query: str
) -> None:
    answer = track.click(f"/track/{campaign.id}{query}", method=method, **{"User-Agent": user_agent})
    assert answer.status_code == 307 and answer.headers["Location"] != FALLBACK
    [event] = pulled_events(project, pubsub_names[1])
    assert event.bot and event.campaign_id == campaign.id


def test_a_bot_on_an_unknown_campaign_goes_to_the_fallback(
    track: Track, project: str, pubsub_names: tuple[str, str]
) -> None:
    assert track.click("/track/424242", **{"User-Agent": SLACK_UA}).headers["Location"] == FALLBACK
    assert pulled_events(project, pubsub_names[1]) == []


def test_bot_clicks_reach_only_the_bot_counter(
    track: Track, campaign: Any, store: CampaignStore, project: str, pubsub_names: tuple[str, str]
) -> None:
    track.click(f"/track/{campaign.id}", **{"User-Agent": SLACK_UA})
    track.click(f"/track/{campaign.id}?platform=IPhone", **{"User-Agent": "Twitterbot/1.0"})
    track.click(f"/track/{campaign.id}", **{"User-Agent": IPHONE_UA})
    assert function_app("aggregate", "aggregate_http").test_client().post("/").get_json()["counted"] == 3
    counters = store.get(campaign.id).counters
    assert (counters["click_count"], counters["iphone_click_count"], counters["bot_click_count"]) == (1, 1, 2)


# --- visitor keys ---------------------------------------------------------------------------


@pytest.fixture
def salts(db: Any) -> dict[str, bytes]:
    """Today's and tomorrow's salts, made as the aggregate's scheduled run makes them."""
    SaltKeeper(db, timeout=10).keep_ahead(datetime.now(timezone.utc))
    return {snapshot.id: snapshot.get("salt") for snapshot in db.collection("salts").stream()}


def key_of(salts: dict[str, bytes], event: ClickEvent, address: str, user_agent: str) -> str:
    return visitor_key(salts[salt_id(salt_day(event.ts))], address, user_agent)


def by_seq(project: str, subscription: str) -> list[ClickEvent]:
    return sorted(pulled_events(project, subscription), key=lambda e: e.seq)


def test_a_click_carries_its_clients_visitor_key_of_the_day_never_its_address(
    track: Track, campaign: Any, salts: dict[str, bytes], project: str, pubsub_names: tuple[str, str]
) -> None:
    path = f"/track/{campaign.id}?platform=Android"
    # Off Cloud Run the client names itself in X-Forwarded-For: the peer's address decides.
    track.click(path, **{"User-Agent": ANDROID_UA, "X-Forwarded-For": "198.51.100.1"})
    track.click(path, **{"User-Agent": ANDROID_UA, "X-Forwarded-For": "198.51.100.2"})
    track.click(path, **{"User-Agent": IPHONE_UA})
    track.click(path, method="HEAD", **{"User-Agent": ANDROID_UA})  # a preview is no visitor
    # a click the campaign cannot count (an untargeted platform) counts apart, so is no visitor either
    track.click(f"/track/{campaign.id}?platform=WindowsPhone", **{"User-Agent": ANDROID_UA})
    messages = pull_all(project, pubsub_names[1])
    events = sorted(events_in(messages), key=lambda e: e.seq)
    peer = "testclient"  # the test client's address, as Starlette gives it
    assert [e.visitor for e in events] == [key_of(salts, events[0], peer, ANDROID_UA)] * 2 + [
        key_of(salts, events[2], peer, IPHONE_UA), "", ""]
    assert events[-1].inactive
    assert all(peer.encode() not in m.message.data and b"198.51.100" not in m.message.data for m in messages)


def test_on_cloud_run_the_visitor_is_the_last_forwarded_for_hop(
    db: Any, campaign: Any, salts: dict[str, bytes], project: str, pubsub_names: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("K_SERVICE", "track")  # set by Cloud Run on every deployed function
    path = f"/track/{campaign.id}?platform=Android"
    with serve_track() as track:
        # What the client itself sends comes first, and changes nothing.
        track.click(path, **{"User-Agent": ANDROID_UA, "X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
        track.click(path, **{"User-Agent": ANDROID_UA, "X-Forwarded-For": "198.51.100.2,203.0.113.7"})
        track.click(path, **{"User-Agent": ANDROID_UA, "X-Forwarded-For": "203.0.113.8"})
    events = by_seq(project, pubsub_names[1])
    assert [e.visitor for e in events] == [key_of(salts, events[0], "203.0.113.7", ANDROID_UA)] * 2 + [
        key_of(salts, events[2], "203.0.113.8", ANDROID_UA)]


def count_salt_reads(track: Track) -> list[str]:
    """The days whose salt the instance reads from Firestore from now on, through its own reader."""
    visitors, reads = track.tracker.visitors, []
    read = visitors.read_salt

    async def counted(day: Any) -> Any:
        reads.append(salt_id(day))
        return await read(day)

    visitors.read_salt = counted
    return reads


def test_the_days_salt_is_read_once_per_instance_and_the_next_days_ahead(
    track: Track, campaign: Any, salts: dict[str, bytes], project: str, pubsub_names: tuple[str, str]
) -> None:
    reads = count_salt_reads(track)
    for _ in range(5):
        track.click(f"/track/{campaign.id}?platform=IPhone", **{"User-Agent": IPHONE_UA})
    today = salt_day(datetime.now(timezone.utc))
    assert wait_until(lambda: len(reads) == 2, timeout=5), reads
    assert reads == [salt_id(today), salt_id(today + timedelta(days=1))]  # tomorrow's read in the background
    assert len({e.visitor for e in by_seq(project, pubsub_names[1])}) == 1


def test_without_the_days_salt_clicks_count_without_a_visitor_key_and_one_line_says_so(
    track: Track, campaign: Any, db: Any, project: str, pubsub_names: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = f"/track/{campaign.id}?platform=Android"
    reads = count_salt_reads(track)
    for _ in range(3):
        assert track.click(path).headers["Location"] == campaign.redirect_url
    assert [e.visitor for e in by_seq(project, pubsub_names[1])] == [""] * 3
    assert len(reads) == 1  # tried once: a click never waits for a retry
    [line] = log_lines(caplog, "clicks counted without a visitor key: the day's salt is not to be had")
    assert line["severity"] == "WARNING" and "not made yet" in line["reason"]
    # The aggregate's next run makes the salt; the instance reads it again in the background, a minute
    # after its last try as deployed, here at once.
    salts = SaltKeeper(db, timeout=10)
    salts.keep_ahead(datetime.now(timezone.utc))
    track.tracker.visitors.retry_seconds = 0

    def click_has_a_key() -> bool:
        track.click(path)
        return any(e.visitor for e in pulled_events(project, pubsub_names[1]))

    assert wait_until(click_has_a_key, timeout=10)
    assert len(log_lines(caplog, "clicks counted without a visitor key: the day's salt is not to be had")) == 1


def test_a_flood_of_unknown_ids_costs_one_read_per_id_per_negative_ttl(
    track: Track, project: str, pubsub_names: tuple[str, str]
) -> None:
    reads = track.count_reads()
    ids = random.sample(range(10**6, 10**9), 100)
    for _ in range(3):
        for campaign_id in ids:
            assert track.click(f"/track/{campaign_id}?platform=Android").headers["Location"] == FALLBACK
    assert sorted(reads) == sorted(ids)
    assert pulled_events(project, pubsub_names[1]) == []


def test_concurrent_clicks_on_a_cold_campaign_make_one_read(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str]
) -> None:
    reads = track.count_reads()

    def click(_: int) -> str:
        return track.click(f"/track/{campaign.id}?platform=Android").headers["Location"]

    with ThreadPoolExecutor(32) as pool:
        locations = list(pool.map(click, range(64)))
    assert locations == ["https://github.com/otobrglez/o7tracker"] * 64
    assert reads == [campaign.id]
    assert len(pulled_events(project, pubsub_names[1])) == 64


def test_clicks_that_share_a_publish_call_share_its_message_one_event_a_line(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str]
) -> None:
    client, requests = track.tracker.publisher.client, []
    publish = client.publish

    async def recorded(request: Any, **kwargs: Any) -> Any:
        requests.append(request)
        return await publish(request=request, **kwargs)

    client.publish = recorded
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda _: track.click(f"/track/{campaign.id}?platform=Android"), range(64)))
    assert all(len(request.messages) == 1 for request in requests)  # one partition: one message a call
    messages = pull_all(project, pubsub_names[1])
    assert len(messages) == len(requests) < 64  # calls made while others ran carried several clicks
    events = events_in(messages)
    assert len({e.click_id for e in events}) == 64


def test_a_huge_user_agent_is_classified_and_kept_truncated(
    track: Track, campaign: Any, project: str, pubsub_names: tuple[str, str]
) -> None:
    import classify

    huge = IPHONE_UA + " " + "x" * 7000
    classify.is_bot.cache_clear()
    answer = track.click(f"/track/{campaign.id}", **{"User-Agent": huge})
    assert answer.headers["Location"] == "https://apps.apple.com/app/id1"  # still detected as an iPhone
    [event] = pulled_events(project, pubsub_names[1])
    assert event.user_agent == huge[:512]
    classify.is_bot(huge[:512])
    assert classify.is_bot.cache_info().hits == 1  # the tracker asked about the truncated string only


def legacy_campaign(db: Any, store: CampaignStore) -> int:
    """A campaign as the store made them before ids were keyed: any random id below 2^53."""
    while True:
        legacy_id = random.randint(1, 2**53 - 1)
        if not store.ids.verify(legacy_id):
            break
    now = datetime.now(timezone.utc)
    db.collection("campaigns").document(str(legacy_id)).create({
        "redirect_url": "https://legacy.example/", "platforms": ["Android"], "platform_urls": {},
        "created_at": now, "updated_at": now})
    return legacy_id


def write_legacy_registry(capsys: pytest.CaptureFixture[str]) -> str:
    from tools import legacy_ids

    assert legacy_ids.main() == 0
    return capsys.readouterr().out


def test_a_flood_of_never_issued_ids_costs_no_firestore_read(
    track: Track, campaign: Any, store: CampaignStore, project: str, pubsub_names: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "0 of 1 campaign ids are unkeyed" in write_legacy_registry(capsys)
    with serve_track() as fresh:  # a new instance loads the registry as it starts
        assert wait_until(fresh.registry_loaded, 10)
        reads = fresh.count_reads()
        # One made-up id in 16.8 million passes the check (and costs a read): left out, so the count is exact.
        flood = [i for i in random.sample(range(1, 2**53), 2000) if not store.ids.verify(i)]
        for campaign_id in flood:
            assert fresh.click(f"/track/{campaign_id}?platform=Android").headers["Location"] == FALLBACK
        assert reads == []
        assert fresh.click(f"/track/{campaign.id}?platform=Android").headers["Location"] == campaign.redirect_url
        assert reads == [campaign.id]
    assert [e.campaign_id for e in pulled_events(project, pubsub_names[1])] == [campaign.id]


def test_ids_issued_before_ids_were_keyed_keep_redirecting(
    track: Track, campaign: Any, db: Any, store: CampaignStore, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy_id = legacy_campaign(db, store)
    never_issued = legacy_id + 1 if not store.ids.verify(legacy_id + 1) else legacy_id + 2
    # No registry yet (the track function deployed first): every id is looked up, as before.
    assert track.click(f"/track/{legacy_id}?platform=Android").headers["Location"] == "https://legacy.example/"
    assert "1 of 2 campaign ids are unkeyed, written in 1 document(s)" in write_legacy_registry(capsys)
    with serve_track() as fresh:
        assert wait_until(fresh.registry_loaded, 10)
        reads = fresh.count_reads()
        assert fresh.click(f"/track/{legacy_id}?platform=Android").headers["Location"] == "https://legacy.example/"
        assert fresh.click(f"/track/{campaign.id}?platform=Android").headers["Location"] == campaign.redirect_url
        assert fresh.click(f"/track/{never_issued}?platform=Android").headers["Location"] == FALLBACK
        assert sorted(reads) == sorted([legacy_id, campaign.id])  # never the made-up id


def test_without_a_campaign_id_key_the_function_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import ConfigError

    monkeypatch.delenv("CAMPAIGN_ID_KEY")
    with pytest.raises(ConfigError, match="CAMPAIGN_ID_KEY"), serve_track():
        pass


# -- lifecycle: status, dates, the cap, the fallback ----------------------------------------------

OVER = "https://campaign.example/over"  # a campaign's own fallback
DESTINATION = "https://github.com/otobrglez/o7tracker"


def lifecycle_campaign(store: CampaignStore, **values: Any) -> Any:
    return store.create({"redirect_url": DESTINATION, "platforms": ["Android", "IPhone"], **values})


def scheduled_run() -> dict[str, Any]:
    body: dict[str, Any] = function_app("aggregate", "aggregate_http").test_client().post("/").get_json()
    return body


def test_a_paused_campaigns_clicks_go_to_its_fallback_and_count_apart_per_platform(
    track: Track, store: CampaignStore
) -> None:
    paused = lifecycle_campaign(store, status="paused", fallback_url=OVER)
    for query, headers in (("?platform=Android", {}), ("?platform=Android", {}), ("?platform=WindowsPhone", {}),
                           ("?platform=BlackBerry", {}), ("", {"User-Agent": IPAD_UA}), ("", {"User-Agent": SLACK_UA}),
                           ("?platform=IPhone", {"User-Agent": SLACK_UA})):
        answer = track.click(f"/track/{paused.id}{query}", **headers)
        assert (answer.status_code, answer.headers["Location"]) == (307, OVER), (query, headers)
    assert scheduled_run()["counted"] == 5
    # a click naming no platform (a desktop, an iPad, an unknown name) counts nowhere, as before; a bot stays a bot
    assert {k: v for k, v in store.get(paused.id).counters.items() if v} == {
        "inactive_click_count": 3, "android_inactive_click_count": 2, "windowsphone_inactive_click_count": 1,
        "bot_click_count": 2}


def test_without_a_fallback_of_its_own_a_campaign_that_cannot_count_sends_to_the_global_one(
    track: Track, store: CampaignStore
) -> None:
    archived = lifecycle_campaign(store, status="archived")
    assert track.click(f"/track/{archived.id}?platform=Android").headers["Location"] == FALLBACK
    active = lifecycle_campaign(store, fallback_url=OVER)
    assert track.click(f"/track/{active.id}?platform=WindowsPhone").headers["Location"] == OVER  # untargeted
    assert track.click(f"/track/{active.id}", **{"User-Agent": IPAD_UA}).headers["Location"] == OVER
    assert track.click(f"/track/{active.id}?platform=Android").headers["Location"] == DESTINATION


def test_a_click_on_a_platform_the_campaign_does_not_target_counts_as_inactive(
    track: Track, campaign: Any, store: CampaignStore, project: str, pubsub_names: tuple[str, str]
) -> None:
    assert track.click(f"/track/{campaign.id}?platform=WindowsPhone").headers["Location"] == FALLBACK
    [event] = pulled_events(project, pubsub_names[1])
    assert (event.platform, event.bot, event.inactive) == ("WindowsPhone", False, True)


def test_a_campaigns_dates_are_decided_by_each_clicks_own_time(
    track: Track, store: CampaignStore, project: str, pubsub_names: tuple[str, str]
) -> None:
    starts_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    ends_at = starts_at + timedelta(seconds=1)
    dated = lifecycle_campaign(store, starts_at=starts_at, ends_at=ends_at, fallback_url=OVER)
    reads = track.count_reads()
    locations = []
    while datetime.now(timezone.utc) < ends_at + timedelta(seconds=0.5):
        locations.append(track.click(f"/track/{dated.id}?platform=Android").headers["Location"])
        time.sleep(0.05)
    assert reads == [dated.id]  # one route, read once: each click decides by its own time
    events = sorted(pulled_events(project, pubsub_names[1]), key=lambda e: e.seq)
    assert len(events) == len(locations)
    for event, location in zip(events, locations, strict=True):
        counts = starts_at <= event.ts < ends_at
        assert (event.inactive, location) == (not counts, DESTINATION if counts else OVER), event.ts
    assert [e.inactive for e in events].count(False) > 0 and events[0].inactive and events[-1].inactive


def test_a_pause_and_a_resume_reach_the_track_function_within_the_cache_ttl(
    store: CampaignStore, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    monkeypatch.setenv("CACHE_TTL_SECONDS", "0.5")
    campaign = lifecycle_campaign(store, fallback_url=OVER)
    path = f"/track/{campaign.id}?platform=Android"
    with serve_track() as track:
        assert track.click(path).headers["Location"] == DESTINATION
        store.update(campaign.id, {"status": "paused"})
        assert track.click(path).headers["Location"] == DESTINATION  # stale, by design
        time.sleep(0.6)
        assert track.click(path).headers["Location"] == OVER
        store.update(campaign.id, {"status": "active"})
        time.sleep(0.6)
        assert track.click(path).headers["Location"] == DESTINATION


def test_the_cap_overshoots_by_at_most_the_clicks_before_the_run_counts_it_and_within_the_cache_ttl(
    store: CampaignStore, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = 2.0
    monkeypatch.setenv("FALLBACK_URL", FALLBACK)
    monkeypatch.setenv("PUBLISH_WAIT_SECONDS", "10")
    monkeypatch.setenv("CACHE_TTL_SECONDS", str(ttl))
    capped = lifecycle_campaign(store, max_clicks=3, fallback_url=OVER)
    path = f"/track/{capped.id}?platform=Android"
    with serve_track() as track:
        # Until a run has counted them the counts do not show them (the as_of lag): every click counts.
        assert [track.click(path).headers["Location"] for _ in range(5)] == [DESTINATION] * 5
        assert scheduled_run()["counted"] == 5
        counted_at = time.monotonic()
        # The instance keeps the route it read for the TTL; then it reads the counts, and stops counting.
        within_ttl = 0
        while track.click(path).headers["Location"] == DESTINATION:
            within_ttl += 1
            assert time.monotonic() - counted_at < ttl + 1.0, "still counting past the cache TTL"
            time.sleep(0.05)
        assert [track.click(path).headers["Location"] for _ in range(3)] == [OVER] * 3
    assert scheduled_run()["counted"] == within_ttl + 4
    counters = store.get(capped.id).counters
    overshoot = counters["click_count"] - 3
    assert overshoot == 2 + within_ttl  # the clicks before the run counted the cap, and those within the TTL
    assert counters["inactive_click_count"] == counters["android_inactive_click_count"] == 4


def test_a_paused_ended_capped_or_unstarted_campaign_costs_no_more_reads_per_click_than_an_active_one(
    track: Track, store: CampaignStore, pubsub_names: tuple[str, str]
) -> None:
    now = datetime.now(timezone.utc)
    capped = lifecycle_campaign(store, max_clicks=1, fallback_url=OVER)
    with serve_track() as other:
        other.click(f"/track/{capped.id}?platform=Android")
    assert scheduled_run()["counted"] == 1
    campaigns = [lifecycle_campaign(store), lifecycle_campaign(store, status="paused", fallback_url=OVER),
                 lifecycle_campaign(store, ends_at=now - timedelta(days=1), fallback_url=OVER),
                 lifecycle_campaign(store, starts_at=now + timedelta(days=1), fallback_url=OVER), capped]
    reads = track.count_reads()
    for campaign in campaigns:
        locations = {track.click(f"/track/{campaign.id}?platform=Android").headers["Location"] for _ in range(5)}
        assert locations == {DESTINATION if campaign is campaigns[0] else OVER}  # known, cached, not counting
    assert sorted(reads) == sorted(c.id for c in campaigns)  # one read each, whatever its state
