"""The admin API under schemathesis, against ``./run.sh`` as a user runs it, for about a minute.

Every phase runs (examples, coverage, fuzzing, stateful) with every check but one: no answer may
be a server error, and every status, content type, header and body must be what
``/admin/openapi.json`` documents. ``positive_data_acceptance`` is left out: the server checks
more than a schema can state (a URL's host, a range's length, ``cursor`` needing ``limit``), so
some schema-valid requests rightly answer 400. The deprecated ``/campains`` operations are left out
too: they are the same views as ``/campaigns`` (the function tests cover them), and the stateful
phase cannot know that a campaign deleted under one spelling is gone under the other.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from test_stack import AUTH, Stack, start_stack

FUZZ_SECONDS = 60
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # schemathesis sends wrong credentials on purpose (its ignored_auth check); with the default
    # login limit, its later requests would all answer 429.
    stack = start_stack(tmp_path_factory.mktemp("fuzz-stack") / "run.log", LOGIN_MAX_FAILURES="1000000")
    yield stack
    stack.stop()


def test_errors_the_framework_answers_are_json_on_the_running_stack(stack: Stack) -> None:
    for path in ("/admin/campaigns%0A", "/admin/campaigns/1%0A/stats", "/admin/nothing"):
        answer = requests.get(stack.url + path, auth=AUTH, timeout=10)
        assert answer.status_code == 404 and answer.json()["status"] == "error", path
    answer = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10,
                           data="[" * 5000 + "]" * 5000, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "nested" in answer.json()["msg"]


def test_schemathesis_finds_nothing_in_a_minute(stack: Stack, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
        "run", f"{stack.url}/admin/openapi.json",
        "--auth", f"{AUTH[0]}:{AUTH[1]}",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--exclude-deprecated",
        "--max-time", str(FUZZ_SECONDS), "--request-timeout", "60",  # generous: a loaded machine is slow, not wrong
        "--generation-database", "none", "--no-color",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=FUZZ_SECONDS * 4)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"\u2705 {phase}" in report, f"the {phase} phase did not pass:\n{report}"
    assert re.search(r"Test cases:\s+\d+ generated, \d+ passed", report), report
