"""All configuration, read from the environment in this one place.

Every setting is declared once, as a field of :class:`Settings` made with
:func:`setting`: its environment variable, type (the annotation), default,
meaning and the functions that read it. Everything else is derived from these
declarations: reading the environment (:meth:`Settings.from_env`), the
README's configuration table (``python -m shared.config --markdown``, checked
by tests/unit/test_config.py), and the check of deploy.sh's defaults
(tests/test_deploy.py). To add a setting, add a name constant and a field::

    LOOKUP_TIMEOUT_SECONDS = "LOOKUP_TIMEOUT_SECONDS"
    ...
    lookup_timeout_seconds: float = setting(
        LOOKUP_TIMEOUT_SECONDS, 2.0, "Deadline of a campaign read on a cache miss.", used_by=("track",)
    )

then ``python -m shared.config --update-readme`` rewrites the README's table.

Functions load their settings once at cold start with :func:`load`, naming
what they cannot run without, so a missing or malformed setting stops the
instance with a clear message instead of failing on the first request.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final, Literal, TypeVar

T = TypeVar("T", str, int, float, None)

# Each partition is a subscription and a scheduler job; a Pub/Sub filter naming a partition is short.
MAX_PARTITIONS: Final = 32

# The deployed functions, as folders under functions/.
Function = Literal["track", "admin", "aggregate"]

PROJECT: Final = "GOOGLE_CLOUD_PROJECT"
CLICKS_TOPIC: Final = "CLICKS_TOPIC"
CLICKS_SUBSCRIPTION: Final = "CLICKS_SUBSCRIPTION"
DEAD_LETTER_SUBSCRIPTION: Final = "DEAD_LETTER_SUBSCRIPTION"
FALLBACK_URL: Final = "FALLBACK_URL"
AUTH_USER: Final = "AUTH_USER"
AUTH_PASSWORD: Final = "AUTH_PASSWORD"
CACHE_TTL_SECONDS: Final = "CACHE_TTL_SECONDS"
CACHE_MAX_SIZE: Final = "CACHE_MAX_SIZE"
NEGATIVE_CACHE_TTL_SECONDS: Final = "NEGATIVE_CACHE_TTL_SECONDS"
LOOKUP_TIMEOUT_SECONDS: Final = "LOOKUP_TIMEOUT_SECONDS"
PUBLISH_WAIT_SECONDS: Final = "PUBLISH_WAIT_SECONDS"
PUBLISH_DEADLINE_SECONDS: Final = "PUBLISH_DEADLINE_SECONDS"
PUBLISH_BATCH_MAX_MESSAGES: Final = "PUBLISH_BATCH_MAX_MESSAGES"
PUBLISH_MAX_IN_FLIGHT: Final = "PUBLISH_MAX_IN_FLIGHT"
PUBLISH_BUFFER_MAX_MESSAGES: Final = "PUBLISH_BUFFER_MAX_MESSAGES"
PUBLISH_BUFFER_MAX_BYTES: Final = "PUBLISH_BUFFER_MAX_BYTES"
AGGREGATE_BATCH_SIZE: Final = "AGGREGATE_BATCH_SIZE"
AGGREGATE_MAX_SECONDS: Final = "AGGREGATE_MAX_SECONDS"
AGGREGATE_MODE: Final = "AGGREGATE_MODE"
AGGREGATE_PARTITIONS: Final = "AGGREGATE_PARTITIONS"
AGGREGATE_FILL_SECONDS: Final = "AGGREGATE_FILL_SECONDS"
DELETE_GRACE_SECONDS: Final = "DELETE_GRACE_SECONDS"
DELETE_MAX_DOCUMENTS: Final = "DELETE_MAX_DOCUMENTS"
COUNTER_SHARDS: Final = "COUNTER_SHARDS"
REDELIVERY_HORIZON_DAYS: Final = "REDELIVERY_HORIZON_DAYS"
MAX_BODY_BYTES: Final = "MAX_BODY_BYTES"
LOGIN_MAX_FAILURES: Final = "LOGIN_MAX_FAILURES"
LOGIN_WINDOW_SECONDS: Final = "LOGIN_WINDOW_SECONDS"
K_SERVICE: Final = "K_SERVICE"
TRACK_BASE_URL: Final = "TRACK_BASE_URL"
CAMPAIGN_ID_KEY: Final = "CAMPAIGN_ID_KEY"

# 16 characters of deploy.sh's base64 are 96 random bits: far past guessing.
MIN_CAMPAIGN_ID_KEY_CHARS: Final = 16

_DECLARATION = "o7tracker.setting"


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; raised at cold start."""


@dataclass(frozen=True)
class _Declared:
    name: str
    description: str
    used_by: tuple[Function, ...]


def setting(name: str, default: T, description: str, *, used_by: tuple[Function, ...]) -> T:
    """A :class:`Settings` field read from the environment variable ``name``.

    ``default`` is what an unset or empty variable gives; ``None`` means the
    setting has no default, and the functions that need it say so to
    :func:`load`. Numbers must be positive. ``description`` is one line of the
    README's table, so it says what the setting means, not how it is read.
    """
    return field(default=default, metadata={_DECLARATION: _Declared(name, description, used_by)})


@dataclass(frozen=True)
class Settings:
    project: str | None = setting(
        PROJECT, None, "Google Cloud project of Firestore and Pub/Sub; required by track and aggregate.",
        used_by=("track", "admin", "aggregate"),
    )
    clicks_topic: str = setting(
        CLICKS_TOPIC, "o7-clicks", "Pub/Sub topic the track function publishes click events to.",
        used_by=("track",),
    )
    clicks_subscription: str = setting(
        CLICKS_SUBSCRIPTION, "o7-clicks-aggregate", "Pull subscription on the click topic that the drain empties.",
        used_by=("aggregate",),
    )
    dead_letter_subscription: str = setting(
        DEAD_LETTER_SUBSCRIPTION, "o7-clicks-dead-letter-review", "Subscription on the dead-letter topic, where "
        "messages of click events the drain failed to fold 10 times wait (python -m tools.dead_letters counts and "
        "requeues them).",
        used_by=("aggregate",),
    )
    fallback_url: str = setting(
        FALLBACK_URL, "http://outfit7.com", "Where every link that cannot be counted redirects.",
        used_by=("track",),
    )
    auth_user: str = setting(
        AUTH_USER, "admin", "User name of the admin API's basic auth.",
        used_by=("admin",),
    )
    auth_password: str | None = setting(
        AUTH_PASSWORD, None, "Password of the admin API's basic auth; required: the admin function never runs open.",
        used_by=("admin",),
    )
    cache_ttl_seconds: float = setting(
        CACHE_TTL_SECONDS, 30.0, "How long a warm track instance may keep serving a campaign after an admin edit.",
        used_by=("track",),
    )
    cache_max_size: int = setting(
        CACHE_MAX_SIZE, 100_000, "Campaigns (and, apart, unknown ids) a track instance keeps in memory.",
        used_by=("track",),
    )
    # Unknown ids are remembered briefly so a flood of bad links stays cheap,
    # yet a campaign created just after a miss is reachable within seconds.
    negative_cache_ttl_seconds: float = setting(
        NEGATIVE_CACHE_TTL_SECONDS, 5.0, "How long an unknown campaign id is remembered as unknown.",
        used_by=("track",),
    )
    lookup_timeout_seconds: float = setting(
        LOOKUP_TIMEOUT_SECONDS, 1.5, "Deadline of a campaign read on a cache miss, shared by the clicks waiting on it; "
        "past it they go to the fallback. Also of the day's visitor salt read (once a day per instance); past it "
        "clicks are counted without a visitor key.",
        used_by=("track",),
    )
    publish_wait_seconds: float = setting(
        PUBLISH_WAIT_SECONDS, 1.0, "Longest a click waits for Pub/Sub to confirm its event before it redirects "
        "anyway (the event is then logged for replay).",
        used_by=("track",),
    )
    publish_deadline_seconds: float = setting(
        PUBLISH_DEADLINE_SECONDS, 30.0, "How long one publish call retries transient errors in the background "
        "before its events are logged for replay.",
        used_by=("track",),
    )
    publish_batch_max_messages: int = setting(
        PUBLISH_BATCH_MAX_MESSAGES, 1000, "Most click events in one Publish call (those of one partition go as one "
        "message).",
        used_by=("track",),
    )
    publish_max_in_flight: int = setting(
        PUBLISH_MAX_IN_FLIGHT, 2, "Most Publish calls a track instance runs at once; clicks that come meanwhile "
        "share the next one.",
        used_by=("track",),
    )
    # A stalled Pub/Sub cannot grow a track instance's memory past these;
    # further events go straight to the replay log.
    publish_buffer_max_messages: int = setting(
        PUBLISH_BUFFER_MAX_MESSAGES, 10_000, "Most click events waiting for or in a Publish call, per instance.",
        used_by=("track",),
    )
    publish_buffer_max_bytes: int = setting(
        PUBLISH_BUFFER_MAX_BYTES, 8 * 1024 * 1024, "Most bytes of click events waiting for or in a Publish call, "
        "per instance.",
        used_by=("track",),
    )
    aggregate_batch_size: int = setting(
        AGGREGATE_BATCH_SIZE, 2000, "Events the drain gathers (over several pulls, in whole messages) into one "
        "journal write.",
        used_by=("aggregate",),
    )
    # Well within the subscription's 60 s ack deadline, so a run never receives its own messages again.
    aggregate_fill_seconds: float = setting(
        AGGREGATE_FILL_SECONDS, 1.0, "Longest the drain keeps pulling to fill a batch before it writes what it has.",
        used_by=("aggregate",),
    )
    aggregate_max_seconds: float = setting(
        AGGREGATE_MAX_SECONDS, 50.0, "Time budget of one scheduled run (drain, apply, upkeep); deploy.sh keeps it "
        "a margin below the function's timeout.",
        used_by=("aggregate",),
    )
    aggregate_mode: str = setting(
        AGGREGATE_MODE, "scheduled", "scheduled, event or both, as deploy.sh deploys them; with event the scheduled "
        "run applies the journal and sweeps deletions but does not drain the pull subscription.",
        used_by=("aggregate",),
    )
    aggregate_partitions: int = setting(
        AGGREGATE_PARTITIONS, 1, f"Partitions of the click stream, each drained by its own scheduled run (1 to "
        f"{MAX_PARTITIONS}): track tags each click with one, deploy.sh makes a subscription and a scheduler job per "
        "partition; only ever raise it (docs/counting.md, Partitions).",
        used_by=("track", "aggregate"),
    )
    # Longer than any fold that checked the campaign just before its delete
    # takes to commit, so such a fold's counters are swept with the rest.
    delete_grace_seconds: float = setting(
        DELETE_GRACE_SECONDS, 600.0, "How long after a campaign's delete the scheduled run sweeps its counters.",
        used_by=("aggregate",),
    )
    delete_max_documents: int = setting(
        DELETE_MAX_DOCUMENTS, 2000, "Documents one scheduled run deletes at most while sweeping deleted campaigns.",
        used_by=("aggregate",),
    )
    # Two drains folding 1,200 clicks/s of one campaign committed to it about
    # ten times a second; over 16 shards that is 0.6 writes per second per
    # counter document (python -m bench.soak).
    counter_shards: int = setting(
        COUNTER_SHARDS, 16, "Counter documents per campaign, spreading its writes; only ever raise it.",
        used_by=("admin", "aggregate"),
    )
    # The subscription's 7-day retention and a day to replay logged events (tools/replay.py).
    redelivery_horizon_days: float = setting(
        REDELIVERY_HORIZON_DAYS, 8.0, "Oldest click event counted, by its ts; older ones are poison, and what "
        "guards against counting a click twice is kept this long.",
        used_by=("aggregate",),
    )
    max_body_bytes: int = setting(
        MAX_BODY_BYTES, 16 * 1024, "Largest request body the admin API reads.",
        used_by=("admin",),
    )
    login_max_failures: int = setting(
        LOGIN_MAX_FAILURES, 10,
        "Failed basic-auth attempts one client may make per window before the admin answers 429.",
        used_by=("admin",),
    )
    login_window_seconds: float = setting(
        LOGIN_WINDOW_SECONDS, 300.0, "Window, from a client's first failed login, over which its failures count.",
        used_by=("admin",),
    )
    # Its presence means requests come through Google's front end, which
    # names the client in X-Forwarded-For.
    k_service: str | None = setting(
        K_SERVICE, None, "Set by Cloud Run to the service name (so not passed by deploy.sh); the admin's "
        "login limiter and the track function's visitor keys then name the client by X-Forwarded-For.",
        used_by=("track", "admin"),
    )
    # Unset, the admin request's own origin + "/track": right for ./run.sh's one port.
    track_base_url: str | None = setting(
        TRACK_BASE_URL, None, "Where the admin's tracking links point, as <TRACK_BASE_URL>/<id>?platform=<P>; "
        "unset, the admin request's origin + /track. deploy.sh sets the track function's URL.",
        used_by=("admin",),
    )
    # It must never change: every keyed id issued before would then fail the
    # check, and its links go to the fallback.
    campaign_id_key: str | None = setting(
        CAMPAIGN_ID_KEY, None, "Secret key of the campaign ids' check (shared/ids.py): admin issues ids with it, "
        "track checks them before any lookup; required; made once by deploy.sh, never changed.",
        used_by=("track", "admin"),
    )

    def __post_init__(self) -> None:
        if not 1 <= self.aggregate_partitions <= MAX_PARTITIONS:
            raise ConfigError(f"{AGGREGATE_PARTITIONS} must be from 1 to {MAX_PARTITIONS}, "
                              f"not {self.aggregate_partitions}")
        if self.campaign_id_key is not None and len(self.campaign_id_key) < MIN_CAMPAIGN_ID_KEY_CHARS:
            raise ConfigError(
                f"{CAMPAIGN_ID_KEY} must be at least {MIN_CAMPAIGN_ID_KEY_CHARS} characters of random data "
                "(deploy.sh makes one in Secret Manager)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every declared setting from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for declared in SETTINGS:
            raw = env.get(declared.name)
            if raw is not None and raw != "":
                values[declared.attribute] = declared.parse(raw)
        return cls(**values)  # type: ignore[arg-type]  # parse() returns each field's declared type

    def require(self, *names: str) -> Settings:
        """Return self, or raise naming every listed variable that is unset."""
        missing = [name for name in names if not getattr(self, declaration(name).attribute)]
        if missing:
            raise ConfigError(
                "missing required setting(s): " + ", ".join(missing)
                + " (set them in the environment)"
            )
        return self

    def required(self, name: str) -> str:
        """The value of a setting without a default, which its reader cannot do without."""
        return str(getattr(self.require(name), declaration(name).attribute))


@dataclass(frozen=True)
class Setting:
    """One setting as declared on :class:`Settings`."""

    name: str
    attribute: str
    type: type[str] | type[int] | type[float]
    default: str | int | float | None
    description: str
    used_by: tuple[Function, ...]

    def parse(self, raw: str) -> str | int | float:
        if self.type is str:
            return raw
        value: int | float
        try:
            value = int(raw) if self.type is int else float(raw)
        except ValueError:
            kind = "an integer" if self.type is int else "a number"
            raise ConfigError(f"{self.name}={raw!r} is not {kind}") from None
        if not 0 < value < math.inf:
            raise ConfigError(f"{self.name} must be a positive number, got {raw!r}")
        return value


def _declarations() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Settings)
    declared = []
    for f in fields(Settings):
        # A plain field still reads its upper-cased name, so the functions
        # work; test_config fails until it is declared with setting(...).
        spec = f.metadata.get(_DECLARATION) or _Declared(f.name.upper(), "", ())
        kind = next(t for t in (str, int, float) if t in typing.get_args(hints[f.name]) or hints[f.name] is t)
        default = typing.cast("str | int | float | None", f.default)
        if default is not None and type(default) is not kind:
            raise TypeError(f"Settings.{f.name}: default {default!r} is not a {kind.__name__}")
        declared.append(Setting(spec.name, f.name, kind, default, spec.description, spec.used_by))
    return tuple(declared)


SETTINGS: Final = _declarations()
_BY_NAME: Final = {s.name: s for s in SETTINGS}


def declaration(name: str) -> Setting:
    """The setting read from the environment variable ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not a declared setting") from None


def load(*required: str, env: Mapping[str, str] | None = None) -> Settings:
    """Settings for a function's cold start, failing fast on what it needs."""
    return Settings.from_env(env).require(*required)


# ------------------------------------------------------------ documentation --

README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_START = "<!-- settings: generated by python -m shared.config --update-readme -->"
TABLE_END = "<!-- end of settings -->"


def format_default(item: Setting) -> str:
    if item.default is None:
        return "none"
    if isinstance(item.default, str):
        return f"`{item.default}`"
    return f"{item.default:g}" if isinstance(item.default, float) else str(item.default)


def markdown_table() -> str:
    """The README's configuration table, one row per setting."""
    rows = [
        "| variable | type | default | used by | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for item in SETTINGS:
        rows.append(
            f"| `{item.name}` | {item.type.__name__} | {format_default(item)} | {', '.join(item.used_by)} "
            f"| {item.description} |"
        )
    return "\n".join(rows) + "\n"


def readme_table(text: str) -> str | None:
    """The generated part of a README's text, or None without the markers."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        return None
    return text[start + len(TABLE_START):end].strip("\n") + "\n"


def update_readme(path: Path) -> bool:
    """Rewrite the table between the markers; whether anything changed."""
    text = path.read_text()
    if readme_table(text) is None:
        raise SystemExit(f"{path}: no {TABLE_START!r} ... {TABLE_END!r} section")
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    updated = text[:start] + "\n" + markdown_table() + text[end:]
    if updated != text:
        path.write_text(updated)
    return updated != text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.config", description="The declared settings.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the README's configuration table")
    action.add_argument("--update-readme", action="store_true", help="rewrite the table in README.md")
    action.add_argument("--default", metavar="NAME", help="print a setting's default (nothing when it has none)")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
    elif args.update_readme:
        print(f"{README}: {'updated' if update_readme(README) else 'already up to date'}")
    else:
        try:
            item = declaration(args.default)
        except KeyError as exc:
            parser.error(str(exc.args[0]))
        print("" if item.default is None else item.default)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
