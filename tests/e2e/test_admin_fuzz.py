"""The admin API under schemathesis, against ``./run.sh`` as a user runs it, for about a minute.

Every phase runs (examples, coverage, fuzzing, stateful) with every check but one: no answer may
be a server error, and every status, content type, header and body must be what
``/admin/openapi.json`` documents. ``positive_data_acceptance`` is left out: the server checks
more than a schema can state (a URL's host, a range's length, ``cursor`` needing ``limit``), so
some schema-valid requests rightly answer 400. The deprecated ``/campains`` operations are left out
too: they are the same views as ``/campaigns`` (the function tests cover them), and the stateful
phase cannot know that a campaign deleted under one spelling is gone under the other.

The stateful phase runs apart, with its own time budget. Credentials reach schemathesis through the
schema's security scheme, not ``--auth`` (see :func:`schemathesis`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from test_stack import AUTH, Stack, start_stack


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


def schemathesis(stack: Stack, cwd: Path, phases: str, seconds: int) -> str:
    """Run schemathesis's CLI against the stack; its report, which must show no failure.

    The credentials go to the schema's security scheme (``schemathesis.toml``) rather than
    ``--auth``: credentials given on the command line are added to every request, including a
    negative case meant to leave ``Authorization`` out, which the API then rightly accepts and
    schemathesis reports as "schema-violating request accepted" (as with ``--header`` in
    schemathesis issue #2898; seen with seed 192311847561795541935273653846504672452). The
    schema itself needs the credentials too, so it is fetched here and handed over as a file.
    """
    schema = requests.get(f"{stack.url}/admin/openapi.json", auth=AUTH, timeout=10)
    schema.raise_for_status()
    (cwd / "openapi.json").write_text(schema.text)
    [scheme] = schema.json()["components"]["securitySchemes"]
    # JSON strings are TOML strings: whatever the credentials hold, they are quoted right.
    (cwd / "schemathesis.toml").write_text(
        f"[auth.openapi.{json.dumps(scheme)}]\nusername = {json.dumps(AUTH[0])}\npassword = {json.dumps(AUTH[1])}\n")
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", "openapi.json", "--url", f"{stack.url}/admin",
        "--phases", phases, "--exclude-deprecated",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-time", str(seconds), "--request-timeout", "60",  # generous: a loaded machine is slow, not wrong
        "--generation-database", "none", "--no-color", "--report", "har", "--report-har-path", "run.har",
    ]
    run = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=seconds * 5)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    for phase in phases.split(","):
        assert f"\u2705 {phase.capitalize()}" in report, f"the {phase} phase did not pass:\n{report}"
    assert re.search(r"Test cases:\s+\d+ generated, \d+ passed", report), report
    # Had the credentials not reached the API, everything would be a 401 and most checks pass anyway.
    statuses = [entry["response"]["status"] for entry in json.loads((cwd / "run.har").read_text())["log"]["entries"]]
    assert sum(200 <= status < 300 for status in statuses) > len(statuses) // 10, Counter(statuses)
    return report


def test_schemathesis_examples_coverage_and_fuzzing_find_nothing(stack: Stack, tmp_path: Path) -> None:
    schemathesis(stack, tmp_path, "examples,coverage,fuzzing", 35)


def test_schemathesis_stateful_sequences_find_nothing(stack: Stack, tmp_path: Path) -> None:
    report = schemathesis(stack, tmp_path, "stateful", 25)
    assert re.search(r"Scenarios:\s+[1-9]", report), report
