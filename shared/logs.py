"""Structured logging: one JSON object per line, as Cloud Logging parses it.

Each line carries ``severity``, ``message``, the logger and every ``extra=``
field, and, when written while serving a request, what ties it to that
request in Cloud Logging:

* ``logging.googleapis.com/trace`` (``projects/<project>/traces/<trace id>``),
  ``logging.googleapis.com/spanId`` and ``logging.googleapis.com/trace_sampled``,
  from the request's ``traceparent`` or ``X-Cloud-Trace-Context`` header;
* ``logging.googleapis.com/labels`` ``{"execution_id": ...}``, the id
  functions-framework gives every invocation (its ``Function-Execution-Id``),
  read from functions-framework's own per-request context, which it keeps in
  a context variable under both its Flask and its asyncio stack.

HTTP entry points call :func:`bind_request` first. It only stores a
reference in a context variable (a thread or an asyncio task serves one
request at a time, and each request binds anew); the headers are parsed only
when a line is written, which on the click path is rare.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from typing import Any, Protocol

from functions_framework.execution_id import execution_context_var

TRACE = "logging.googleapis.com/trace"
SPAN_ID = "logging.googleapis.com/spanId"
TRACE_SAMPLED = "logging.googleapis.com/trace_sampled"
LABELS = "logging.googleapis.com/labels"

# W3C: version-traceid-parentid-flags, lower-case hex.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# Google's own: TRACE_ID/SPAN_ID;o=OPTIONS, the span id in decimal, the rest optional.
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([0-9]+))?$")

_RESERVED = frozenset(vars(logging.makeLogRecord({})))


class Headers(Protocol):
    """What :func:`bind_request` reads of a request's headers (Flask's and Starlette's alike)."""

    def get(self, key: str, /) -> str | None: ...


_request: ContextVar[tuple[Headers, str | None] | None] = ContextVar("o7tracker_request", default=None)


def bind_request(headers: Headers, project: str | None) -> None:
    """Tie the log lines written while serving this request to its trace (``project`` names it)."""
    _request.set((headers, project))


def trace_fields(headers: Headers, project: str | None) -> dict[str, Any]:
    """Cloud Logging's trace fields for a request's headers; none when it carries no valid trace."""
    trace_id = span_id = None
    sampled = False
    if match := _TRACEPARENT.match(headers.get("traceparent") or ""):
        trace_id, span_id, sampled = match[1], match[2], bool(int(match[3], 16) & 1)
        if trace_id == "0" * 32 or span_id == "0" * 16:
            return {}
    elif match := _CLOUD_TRACE.match(headers.get("X-Cloud-Trace-Context") or ""):
        trace_id, sampled = match[1].lower(), match[3] == "1"
        if match[2] and 0 < int(match[2]) < 2**64:
            span_id = f"{int(match[2]):016x}"  # Cloud Logging wants the span id as 16 hex digits
    if trace_id is None or project is None:
        return {}
    fields: dict[str, Any] = {TRACE: f"projects/{project}/traces/{trace_id}", TRACE_SAMPLED: sampled}
    if span_id:
        fields[SPAN_ID] = span_id
    return fields


def correlation() -> dict[str, Any]:
    """The fields that tie a line written now to the request being served, if any."""
    bound = _request.get()
    fields = trace_fields(*bound) if bound is not None else {}
    execution_id = getattr(execution_context_var.get(), "execution_id", None)
    if execution_id:
        fields[LABELS] = {"execution_id": execution_id}
    return fields


class _Correlate(logging.Filter):
    """Adds the correlation fields when a record is made, while its request is still the current one."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.update(correlation())
        return True


class JsonFormatter(logging.Formatter):
    """Writes ``severity`` and ``message`` plus every ``extra=`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _RESERVED)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


_CORRELATE = _Correlate()


def get_logger(name: str) -> logging.Logger:
    """A logger under ``o7tracker`` that writes JSON lines to stderr once configured."""
    root = logging.getLogger("o7tracker")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = True
    logger = root.getChild(name)
    # On the logger rather than on our handler, so the fields travel with the
    # record to every handler it reaches.
    if _CORRELATE not in logger.filters:
        logger.addFilter(_CORRELATE)
    return logger
