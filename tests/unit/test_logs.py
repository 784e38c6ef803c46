"""Trace fields from each header form, as Cloud Logging wants them."""

from __future__ import annotations

import json
import logging

import pytest

from shared import logs

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(("headers", "span", "sampled"), [
    ({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}, "00f067aa0ba902b7", True),
    ({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-00"}, "00f067aa0ba902b7", False),
    ({"X-Cloud-Trace-Context": f"{TRACE_ID}/123;o=1"}, "000000000000007b", True),
    ({"X-Cloud-Trace-Context": f"{TRACE_ID.upper()}/123"}, "000000000000007b", False),
    ({"X-Cloud-Trace-Context": TRACE_ID}, None, False),
    # both, as Cloud Run sends them: the W3C header wins
    ({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "X-Cloud-Trace-Context": f"{'1' * 32}/1;o=1"},
     "00f067aa0ba902b7", True),
])
def test_each_header_form_gives_the_trace(headers: dict[str, str], span: str | None, sampled: bool) -> None:
    fields = logs.trace_fields(headers, "my-project")
    assert fields[logs.TRACE] == f"projects/my-project/traces/{TRACE_ID}"
    assert fields.get(logs.SPAN_ID) == span
    assert fields[logs.TRACE_SAMPLED] is sampled


@pytest.mark.parametrize("headers", [
    {},
    {"traceparent": "garbage"},
    {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"},
    {"X-Cloud-Trace-Context": "not-a-trace/1;o=1"},
    {"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1\n{{\"severity\":\"ERROR\"}}"},
])
def test_a_missing_or_malformed_header_gives_no_trace(headers: dict[str, str]) -> None:
    assert logs.trace_fields(headers, "my-project") == {}


def test_without_a_project_there_is_no_trace_to_name() -> None:
    assert logs.trace_fields({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}, None) == {}


def test_a_line_keeps_severity_message_and_extras() -> None:
    record = logging.makeLogRecord({"levelname": "ERROR", "name": "o7tracker.x", "msg": "failed %s",
                                    "args": ("here",), "click_id": "abc"})
    line = json.loads(logs.JsonFormatter().format(record))
    assert line == {"severity": "ERROR", "message": "failed here", "logger": "o7tracker.x", "click_id": "abc"}
