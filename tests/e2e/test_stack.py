"""End to end: ``./run.sh`` as a user runs it, driven over HTTP like the original o7tracker."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import subprocess
import sys
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
        each in a session of its own."""
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


def raw_answer(stack: Stack, method: str, path: str, body: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    """An answer with its headers as sent, repeats included (requests would merge them)."""
    token = base64.b64encode(":".join(AUTH).encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", stack.ports["PORT"], timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Authorization": f"Basic {token}", **(headers or {})})
        answer = connection.getresponse()
        return answer, answer.read()
    finally:
        connection.close()


def test_admin_answers_carry_each_header_once_and_no_type_without_a_body(stack: Stack) -> None:
    campaign_id = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10, json={
        "redirect_url": "https://e.example/", "platforms": ["Android"]}).json()["id"]
    for path in ("/admin/", "/admin/static/app.js", "/admin/campaigns", "/admin/nothing", "/admin"):
        answer, _ = raw_answer(stack, "GET", path)
        assert len(answer.headers.get_all("date") or []) == 1, (path, answer.headers.items())
        assert answer.headers.get_all("x-content-type-options") == ["nosniff"], path
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"], path
        assert answer.headers["referrer-policy"] == "no-referrer", path
    answer, body = raw_answer(stack, "DELETE", f"/admin/campaigns/{campaign_id}")
    assert answer.status == 204 and body == b""
    assert answer.headers.get("content-type") is None and answer.headers.get("content-length") is None
    # the aggregate drain is no admin state change: a plain GET with basic auth, as the original's cron
    assert requests.get(f"{stack.url}/tasks/update_stats", auth=AUTH, timeout=60).status_code == 200


def test_a_body_over_the_limit_answers_413_chunked_or_not(stack: Stack) -> None:
    body = b'{"redirect_url": "https://e.example/?' + b"a" * 10_000_000 + b'", "platforms": ["Android"]}'
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    for data in (body, chunks):
        answer = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=60, data=data,
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 413, answer.text
        assert answer.json() == {"status": "error", "msg": "body larger than 16384 bytes"}
    assert all(c["redirect_url"] != "https://e.example/?a" for c in
               requests.get(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10).json())


def test_curl_style_form_bodies_answer_415(stack: Stack) -> None:
    answer = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10,
                           data='{"redirect_url":"https://e.example/","platforms":["Android"]}',
                           headers={"Content-Type": "application/x-www-form-urlencoded"})  # what curl -d sends
    assert answer.status_code == 415 and "application/json" in answer.json()["msg"]


def test_a_second_run_on_busy_ports_fails_clearly(stack: Stack, tmp_path: Path) -> None:
    env = {**os.environ, **{k: str(v) for k, v in stack.ports.items()}}
    second = subprocess.run([str(ROOT / "run.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    for name, port in stack.ports.items():
        assert f"port {port} ({name}) is already in use, held by pid " in second.stderr, second.stderr
    # run.sh execs the stack, so the pid the first run was started with is the one to stop
    assert second.stderr.count(f"(part of ./run.sh, pid {stack.process.pid})") == 3, second.stderr
    assert f"stop that ./run.sh with Ctrl-C in its terminal, or: kill -INT {stack.process.pid}" in second.stderr
    assert "local.gateway:create_gateway" in second.stderr and "java" in second.stderr


def test_a_port_held_by_anything_else_is_named_with_its_holder(tmp_path: Path) -> None:
    port = free_port()
    # Started through a shell that exits at once, so that it descends from no script of this project
    # (under ./test.sh, a child of this test would rightly be named as part of it).
    started = subprocess.run(
        ["sh", "-c", f'"$0" -m http.server --bind 127.0.0.1 {port} >/dev/null 2>&1 & echo $!', sys.executable],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=True)
    holder = int(started.stdout)
    try:
        deadline = time.monotonic() + 30
        while not port_in_use(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        env = {**os.environ, "PORT": str(port), "FIRESTORE_PORT": str(free_port()), "PUBSUB_PORT": str(free_port())}
        run = subprocess.run([str(ROOT / "run.sh")], env=env, capture_output=True, text=True, timeout=120)
    finally:
        os.kill(holder, signal.SIGTERM)
    assert run.returncode == 1
    assert f"error: port {port} (PORT) is already in use, held by pid {holder}: " in run.stderr, run.stderr
    assert f"-m http.server --bind 127.0.0.1 {port}" in run.stderr, run.stderr
    assert f"stop it with: kill {holder}" in run.stderr and "part of" not in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("settings, message", [
    ({"PORT": "abc"}, "error: PORT='abc' is not a port number (1 to 65535)"),
    ({"PORT": "70000"}, "error: PORT='70000' is not a port number (1 to 65535)"),
    ({"PORT": "8080", "PUBSUB_PORT": "-1"}, "error: PUBSUB_PORT='-1' is not a port number (1 to 65535)"),
    ({"PORT": "65535"}, "error: FIRESTORE_PORT would be PORT+1 = 65536, which is not a port (1 to 65535); "
                        "set FIRESTORE_PORT"),
    ({"PORT": "8080", "FIRESTORE_PORT": "8080"},
     "error: PORT, FIRESTORE_PORT and PUBSUB_PORT must be three different ports, "
     "got PORT=8080, FIRESTORE_PORT=8080, PUBSUB_PORT=8082"),
    ({"HOST": "no-such-host.invalid"}, "error: HOST='no-such-host.invalid' is not an address to serve on"),
    ({"LOGIN_MAX_FAILURES": "ten"}, "error: LOGIN_MAX_FAILURES='ten' is not an integer"),
    ({"CACHE_TTL_SECONDS": "-5"}, "error: CACHE_TTL_SECONDS must be a positive number, got '-5'"),
    ({"TRACK_BASE_URL": "track.example.com"}, "error: TRACK_BASE_URL='track.example.com': "),
])
def test_bad_settings_stop_run_sh_with_one_line_naming_the_variable(settings: dict[str, str], message: str) -> None:
    env = {**os.environ, "PORT": "", "FIRESTORE_PORT": "", "PUBSUB_PORT": "", "HOST": "", **settings}
    run = subprocess.run([str(ROOT / "run.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message), run.stderr
    assert "Traceback" not in run.stderr


def test_ctrl_c_stops_everything_it_started(stack: Stack) -> None:
    started = processes_under(stack.process.pid)
    os.killpg(stack.process.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
    assert stack.process.wait(timeout=60) == 0
    deadline = time.monotonic() + 15
    while (still_running(started) or any(port_in_use(p) for p in stack.ports.values())) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still_running(started) == []  # its watchdog too, with nothing left to stop
    assert not any(port_in_use(p) for p in stack.ports.values())


def processes_under(root: int) -> dict[int, tuple[str, str]]:
    """Every process descending from ``root``: its start time, which tells a reused pid apart, and its command."""
    parents: dict[int, int] = {}
    started: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # gone meanwhile
            parents[int(entry.name)] = int(fields[1])
            started[int(entry.name)] = (fields[19], command)
    under, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                under[pid] = started[pid]
                frontier.append(pid)
    return under


def still_running(processes: dict[int, tuple[str, str]]) -> list[str]:
    """The commands of those processes that still run (a zombie, reaped any moment, holds nothing)."""
    running = []
    for pid, (start_time, command) in processes.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == start_time and fields[0] != "Z":
            running.append(f"{pid}: {command}")
    return running


def test_a_killed_run_sh_takes_everything_it_started_with_it(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "run.log")
    started = processes_under(stack.process.pid)
    commands = " ".join(command for _, command in started.values())
    assert commands.count("java ") == 2 and "local.gateway:create_gateway" in commands, commands
    os.kill(stack.process.pid, signal.SIGKILL)  # no handler runs: nothing is stopped by the stack itself
    stack.process.wait(timeout=10)
    deadline = time.monotonic() + 30  # a SIGTERM, then a SIGKILL 10 s later for what did not go
    while (still_running(started) or any(port_in_use(p) for p in stack.ports.values())) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still_running(started) == []
    assert not any(port_in_use(p) for p in stack.ports.values())
