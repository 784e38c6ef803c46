"""End to end: ``./run.sh`` as a user runs it, driven over HTTP like the original o7tracker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local.emulators import free_port, port_in_use

ROOT = Path(__file__).resolve().parents[2]
AUTH = ("admin", "e2e-Secret")


class Stack:
    def __init__(self, process: subprocess.Popen[bytes], ports: dict[str, int]) -> None:
        self.process = process
        self.ports = ports
        self.url = f"http://127.0.0.1:{ports['PORT']}"

    def stop(self) -> None:
        """Ctrl-C, as a user stops it: the stack then stops the emulators and the server it started,
        each in a process group of its own that a kill of the stack's group would leave running."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def start_stack(log_path: Path, **settings: str) -> Stack:
    ports = {"PORT": free_port(), "FIRESTORE_PORT": free_port(), "PUBSUB_PORT": free_port()}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()},
           "AUTH_USER": AUTH[0], "AUTH_PASSWORD": AUTH[1], "FALLBACK_URL": "https://fallback.example/", **settings}
    for name in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        env.pop(name, None)  # the stack starts and names its own emulators
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(ROOT / "run.sh")], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    stack = Stack(process, ports)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        if "o7tracker running on" in log_path.read_text():
            return stack
        time.sleep(0.2)
    stack.stop()
    pytest.fail("the stack did not start:\n" + log_path.read_text())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_path = tmp_path_factory.mktemp("stack") / "run.log"
    stack = start_stack(log_path)
    yield stack
    stack.stop()


def drained(stack: Stack, campaign_id: int, clicks: int, timeout: float = 60) -> dict[str, int]:
    """The campaign once the drain has folded ``clicks`` clicks (or the time is up).

    A click whose publish was not confirmed within PUBLISH_WAIT_SECONDS (a busy
    machine) is logged as "outcome unknown" and lands a little later, so the
    drain runs until the count is reached; exactness is the caller's check.
    """
    deadline = time.monotonic() + timeout
    while True:
        assert requests.get(f"{stack.url}/tasks/update_stats", auth=AUTH, timeout=60).status_code == 200
        counted: dict[str, int] = requests.get(
            f"{stack.url}/admin/campaigns/{campaign_id}", auth=AUTH, timeout=10).json()
        if counted["click_count"] >= clicks or time.monotonic() > deadline:
            return counted
        time.sleep(0.5)


def test_the_original_o7tracker_flow(stack: Stack) -> None:
    admin = f"{stack.url}/admin/campaigns"
    created = requests.post(admin, auth=AUTH, timeout=10, json={
        "redirect_url": "https://github.com/otobrglez/o7tracker", "platforms": ["WindowsPhone", "Android", "IPhone"]})
    assert created.status_code == 201
    campaign_id = created.json()["id"]

    updated = requests.put(f"{admin}/{campaign_id}", auth=AUTH, timeout=10,
                           json={"redirect_url": "https://github.com/otobrglez"})
    assert updated.status_code == 200 and updated.json()["redirect_url"] == "https://github.com/otobrglez"
    listed = requests.get(admin, auth=AUTH, params={"platforms": "Android,WindowsPhone"}, timeout=10)
    assert [c["id"] for c in listed.json()] == [campaign_id]
    time.sleep(0.1)

    for platform in ("Android", "Android", "IPhone", "Android"):
        click = requests.get(f"{stack.url}/track/{campaign_id}", params={"platform": platform},
                             allow_redirects=False, timeout=10)
        assert click.status_code == 307 and click.headers["Cache-Control"] == "no-store"
        assert click.headers["Location"] in ("https://github.com/otobrglez", "https://github.com/otobrglez/o7tracker")
    fallback = requests.get(f"{stack.url}/track/{campaign_id}?platform=Symbian", allow_redirects=False, timeout=10)
    assert fallback.headers["Location"] == "https://fallback.example/"
    assert requests.get(f"{stack.url}/tasks/update_stats", timeout=10).status_code == 401

    stats = requests.get(f"{stack.url}/tasks/update_stats", auth=AUTH, timeout=60)
    assert stats.status_code == 200 and "Updated" in stats.text
    counted = drained(stack, campaign_id, clicks=4)
    assert (counted["click_count"], counted["android_click_count"], counted["iphone_click_count"],
            counted["windowsphone_click_count"]) == (4, 3, 1, 0)

    assert requests.delete(f"{admin}/{campaign_id}", auth=AUTH, timeout=10).status_code == 204
    assert requests.get(f"{admin}/{campaign_id}", auth=AUTH, timeout=10).status_code == 404


def test_many_clicks_over_several_platforms_are_counted_exactly(stack: Stack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    admin = f"{stack.url}/admin/campaigns"
    campaign_id = requests.post(admin, auth=AUTH, timeout=10, json={
        "redirect_url": "https://e.example/", "platforms": ["WindowsPhone", "Android", "IPhone"]}).json()["id"]
    plan = ["Android"] * 70 + ["IPhone"] * 50 + ["WindowsPhone"] * 30 + ["BlackBerry"] * 10

    def click(platform: str) -> int:
        return requests.get(f"{stack.url}/track/{campaign_id}?platform={platform}",
                            allow_redirects=False, timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(click, plan)) == {307}
    counted = drained(stack, campaign_id, clicks=150)
    assert (counted["click_count"], counted["android_click_count"], counted["iphone_click_count"],
            counted["windowsphone_click_count"]) == (150, 70, 50, 30)


def test_a_campaign_with_forward_query_passes_the_clicks_parameters_on(stack: Stack) -> None:
    created = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10, json={
        "redirect_url": "https://shop.example/spring?utm_campaign=spring#offer", "platforms": ["Android"],
        "forward_query": True})
    assert created.status_code == 201 and created.json()["forward_query"] is True
    link = created.json()["tracking_links"]["Android"]
    click = requests.get(link + "&gclid=Cj0KCQ-x_Y&fbclid=IwAR1&utm_campaign=evil&q=red+shoes&s=1%2B1&u=%C3%BC",
                         allow_redirects=False, timeout=10)
    assert click.status_code == 307
    assert click.headers["Location"] == ("https://shop.example/spring?utm_campaign=spring"
                                         "&gclid=Cj0KCQ-x_Y&fbclid=IwAR1&q=red+shoes&s=1%2B1&u=%C3%BC#offer")
    assert drained(stack, created.json()["id"], clicks=1)["android_click_count"] == 1


def test_a_second_run_on_busy_ports_fails_clearly(stack: Stack, tmp_path: Path) -> None:
    env = {**os.environ, **{k: str(v) for k, v in stack.ports.items()}}
    second = subprocess.run([str(ROOT / "run.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert "already in use" in second.stderr


def test_ctrl_c_stops_everything_it_started(stack: Stack) -> None:
    os.killpg(stack.process.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
    assert stack.process.wait(timeout=60) == 0
    deadline = time.monotonic() + 15
    while any(port_in_use(p) for p in stack.ports.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(port_in_use(p) for p in stack.ports.values())
