"""Republish the click events the track function logged as unpublished.

    python -m tools.replay FILE... [--timeout SECONDS] [--dry-run]      (FILE '-' reads stdin)

When the track function cannot confirm a click's publish, it still redirects
and logs the event at ERROR as one JSON line whose ``event`` field holds every
field of the click (outcome ``failed``, or ``unknown`` when the publish timed
out and may still land). This command reads those entries in either form:

- as the function writes them: JSON lines on stderr, mixed with anything else
  (server banners, other log lines, tracebacks), which is skipped;
- as ``gcloud logging read --format=json`` prints them: one JSON array of
  LogEntry objects, with the fields under ``jsonPayload``.

It keys on the ``event`` field of ERROR entries, not on their message, checks
each event as the aggregator would (:meth:`ClickEvent.decode`; an invalid one
is skipped and reported) and publishes it again to ``CLICKS_TOPIC`` in
``GOOGLE_CLOUD_PROJECT`` with its original ``click_id``. The aggregator counts
a click_id once, so replaying a log twice, or replaying a click whose timed-out
publish landed after all, still counts each click once.

An event whose republish is not confirmed within ``--timeout`` is logged on
stderr in the same form, so that stderr can itself be replayed later. Prints
one summary line and exits 1 when any publish was not confirmed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from shared import config
from shared.errors import InvalidEvent
from shared.events import ClickEvent
from shared.logs import get_logger

log = get_logger("replay")

# Python logging's ERROR and CRITICAL, and Cloud Logging's levels above ERROR.
ERROR_SEVERITIES = frozenset({"ERROR", "CRITICAL", "ALERT", "EMERGENCY"})
# Events published before their outcomes are awaited: enough to fill the
# client's batches, few enough that a huge log never sits in memory as futures.
CHUNK_EVENTS = 1000
DEFAULT_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Entry:
    """An ERROR log entry carrying a click event, and where it was read."""

    where: str
    event: dict[str, Any]


@dataclass
class Summary:
    read: int = 0  # ERROR entries carrying an event
    republished: int = 0  # confirmed by Pub/Sub
    duplicates: int = 0  # a click_id already seen in this run, published once
    invalid: int = 0  # events the aggregator would reject, skipped
    failed: int = 0  # publishes that failed or whose outcome is unknown

    def line(self, dry_run: bool = False) -> str:
        republished = f"would_republish={self.republished}" if dry_run else f"republished={self.republished}"
        return (f"replay: read={self.read} {republished} duplicates={self.duplicates} "
                f"invalid={self.invalid} failed={self.failed}")


# --- reading ------------------------------------------------------------------------------------


def read_entries(stream: TextIO, name: str) -> Iterator[Entry]:
    """The click-carrying ERROR entries of one input, in either form.

    A gcloud JSON array is recognised by parsing the whole input as one
    document; anything else is read line by line, so a long stderr capture is
    streamed. A log line may also open with ``[`` (gunicorn's do), so input
    that starts with one but is not a JSON array is read as lines too.
    """
    lines = iter(stream)
    head: list[str] = []
    for line in lines:
        head.append(line)
        if line.strip():
            break
    if head and head[-1].lstrip().startswith("["):
        text = "".join(itertools.chain(head, lines))
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, list):
            yield from _from_log_entries(document, name)
            return
        yield from _from_lines(text.splitlines(), name)
        return
    yield from _from_lines(itertools.chain(head, lines), name)


def _from_lines(lines: Iterable[str], name: str) -> Iterator[Entry]:
    decoder = json.JSONDecoder()
    for number, line in enumerate(lines, 1):
        # The object may follow a prefix some log collectors add (a timestamp, a stream name).
        start = line.find("{")
        if start < 0:
            continue
        try:
            payload, _ = decoder.raw_decode(line, start)
        except ValueError:
            continue
        if isinstance(payload, dict) and (entry := _entry(payload, payload.get("severity"), f"{name}:{number}")):
            yield entry


def _from_log_entries(document: list[Any], name: str) -> Iterator[Entry]:
    for index, log_entry in enumerate(document, 1):
        if not isinstance(log_entry, dict) or not isinstance(payload := log_entry.get("jsonPayload"), dict):
            continue
        # Cloud Logging lifts a JSON line's "severity" into the LogEntry itself.
        severity = log_entry.get("severity") or payload.get("severity")
        if entry := _entry(payload, severity, f"{name}: entry {index}"):
            yield entry


def _entry(payload: dict[str, Any], severity: object, where: str) -> Entry | None:
    event = payload.get("event")
    if str(severity).upper() not in ERROR_SEVERITIES or not isinstance(event, dict):
        return None
    return Entry(where, event)


def click_events(entries: Iterable[Entry], summary: Summary, report: TextIO = sys.stderr) -> Iterator[ClickEvent]:
    """Each valid event once, in order; invalid ones and repeated click_ids are counted and skipped."""
    seen: set[str] = set()
    for entry in entries:
        summary.read += 1
        try:
            event = ClickEvent.decode(json.dumps(entry.event).encode())
        except InvalidEvent as exc:
            summary.invalid += 1
            print(f"skipped {entry.where}: invalid event: {exc}", file=report)
            continue
        if event.click_id in seen:
            summary.duplicates += 1
            continue
        seen.add(event.click_id)
        yield event


# --- publishing ---------------------------------------------------------------------------------


class Republisher:
    """Publishes events, the body alone as the track function sends them, and waits for every outcome."""

    def __init__(self, client: pubsub_v1.PublisherClient, topic_path: str, timeout_seconds: float) -> None:
        self.client = client
        self.topic_path = topic_path
        self.timeout_seconds = timeout_seconds

    def republish(self, events: Sequence[ClickEvent]) -> int:
        """Publish all, then wait up to the timeout for them all; the number not confirmed, each logged."""
        futures = [
            (event, self.client.publish(self.topic_path, event.encode(), timeout=self.timeout_seconds))
            for event in events
        ]
        deadline = time.monotonic() + self.timeout_seconds
        unconfirmed = 0
        for event, future in futures:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except (TimeoutError, gexc.DeadlineExceeded) as exc:
                unconfirmed += 1
                self._log("unknown", event, exc)
            except Exception as exc:  # noqa: BLE001 - any refusal is reported and the rest go on
                unconfirmed += 1
                self._log("failed", event, exc)
        return unconfirmed

    def _log(self, outcome: str, event: ClickEvent, error: BaseException) -> None:
        # The track function's ERROR line, so this command's stderr can be replayed in turn.
        message = "click event replay outcome unknown" if outcome == "unknown" else "click event replay failed"
        log.error(message, extra={"outcome": outcome, "click_id": event.click_id, "event": event.fields(),
                                  "topic": self.topic_path, "error": repr(error)})


def _chunks(events: Iterable[ClickEvent], size: int) -> Iterator[list[ClickEvent]]:
    iterator = iter(events)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# --- command ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="the function's stderr lines or gcloud logging read --format=json output; - for stdin")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help=f"seconds to wait for each chunk's publishes (default {DEFAULT_TIMEOUT_SECONDS:g})")
    parser.add_argument("--dry-run", action="store_true", help="read and check the events, publish nothing")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def _inputs(files: Sequence[str]) -> Iterator[Entry]:
    for name in files:
        if name == "-":
            yield from read_entries(sys.stdin, "stdin")
        else:
            with open(name, encoding="utf-8", errors="replace") as stream:
                yield from read_entries(stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    unreadable = [name for name in args.files if name != "-" and not _readable(name)]
    if unreadable:
        print(f"error: cannot read {', '.join(unreadable)}", file=sys.stderr)
        return 2
    try:
        settings = config.load(config.PROJECT)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = Summary()
    events = click_events(_inputs(args.files), summary)
    if args.dry_run:
        summary.republished = sum(1 for _ in events)
        print(summary.line(dry_run=True))
        return 0
    assert settings.project is not None  # config.load has required it
    client = pubsub_v1.PublisherClient()
    topic_path = client.topic_path(settings.project, settings.clicks_topic)
    republisher = Republisher(client, topic_path, args.timeout)
    for chunk in _chunks(events, CHUNK_EVENTS):
        unconfirmed = republisher.republish(chunk)
        summary.failed += unconfirmed
        summary.republished += len(chunk) - unconfirmed
    print(summary.line())
    return 1 if summary.failed else 0


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
