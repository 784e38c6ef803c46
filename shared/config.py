"""All configuration, read from the environment in this one place.

Each setting's environment variable name is a constant here. Functions load
their settings once at cold start with :func:`load`, naming what they cannot
run without, so a missing setting stops the instance with a clear message
instead of failing on the first request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

PROJECT = "GOOGLE_CLOUD_PROJECT"
CLICKS_TOPIC = "CLICKS_TOPIC"
CLICKS_SUBSCRIPTION = "CLICKS_SUBSCRIPTION"
FALLBACK_URL = "FALLBACK_URL"
AUTH_USER = "AUTH_USER"
AUTH_PASSWORD = "AUTH_PASSWORD"
CACHE_TTL_SECONDS = "CACHE_TTL_SECONDS"
CACHE_MAX_SIZE = "CACHE_MAX_SIZE"
NEGATIVE_CACHE_TTL_SECONDS = "NEGATIVE_CACHE_TTL_SECONDS"
PUBLISH_TIMEOUT_SECONDS = "PUBLISH_TIMEOUT_SECONDS"
PUBLISH_MAX_LATENCY_SECONDS = "PUBLISH_MAX_LATENCY_SECONDS"
AGGREGATE_BATCH_SIZE = "AGGREGATE_BATCH_SIZE"
AGGREGATE_MAX_SECONDS = "AGGREGATE_MAX_SECONDS"
COUNTER_SHARDS = "COUNTER_SHARDS"
DEDUP_RETENTION_DAYS = "DEDUP_RETENTION_DAYS"
MAX_BODY_BYTES = "MAX_BODY_BYTES"
LOGIN_MAX_FAILURES = "LOGIN_MAX_FAILURES"
LOGIN_WINDOW_SECONDS = "LOGIN_WINDOW_SECONDS"
K_SERVICE = "K_SERVICE"
CAMPAIGN_ID_KEY = "CAMPAIGN_ID_KEY"

# 16 characters of deploy.sh's base64 are 96 random bits: far past guessing.
MIN_CAMPAIGN_ID_KEY_CHARS = 16


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; raised at cold start."""


@dataclass(frozen=True)
class Settings:
    project: str | None = None
    clicks_topic: str = "o7-clicks"
    clicks_subscription: str = "o7-clicks-aggregate"
    fallback_url: str = "http://outfit7.com"
    auth_user: str = "admin"
    auth_password: str | None = None
    # A cached campaign may be served this long after an admin edit or delete.
    cache_ttl_seconds: float = 30.0
    cache_max_size: int = 100_000
    # Unknown ids are remembered briefly so a flood of bad links stays cheap,
    # yet a campaign created just after a miss is reachable within seconds.
    negative_cache_ttl_seconds: float = 5.0
    publish_timeout_seconds: float = 10.0
    # Concurrent clicks within this window share one publish round trip. Each
    # batch costs the Pub/Sub client two thread starts and an RPC, so a longer
    # window spends less CPU per click under load: 10 ms (the client's own
    # default) did a little better than 5 ms in python -m bench.hotpath, at the
    # price of up to 5 ms more on a lone click.
    publish_max_latency_seconds: float = 0.01
    aggregate_batch_size: int = 1000
    aggregate_max_seconds: float = 50.0
    # Two drains folding 1,200 clicks/s of one campaign committed to it about
    # ten times a second; over 16 shards that is 0.6 writes per second per
    # counter document (python -m bench.soak). Only ever raise it.
    counter_shards: int = 16
    # Longer than the subscription's 7-day retention, so a redelivered event
    # always finds its dedup record.
    dedup_retention_days: float = 8.0
    max_body_bytes: int = 16 * 1024
    # Failed basic-auth attempts one client may make per window before the
    # admin API answers 429 until the window, counted from its first failure, ends.
    login_max_failures: int = 10
    login_window_seconds: float = 300.0
    # Set by Cloud Run (so on every deployed function) to the service name.
    # Its presence means requests come through Google's front end, which
    # names the client in X-Forwarded-For.
    k_service: str | None = None
    # The secret that campaign ids are keyed with (shared/ids.py); admin issues
    # ids with it and track checks them. It must never change: every keyed id
    # issued before would then fail the check and its links go to the fallback.
    campaign_id_key: str | None = None

    def __post_init__(self) -> None:
        if self.campaign_id_key is not None and len(self.campaign_id_key) < MIN_CAMPAIGN_ID_KEY_CHARS:
            raise ConfigError(
                f"{CAMPAIGN_ID_KEY} must be at least {MIN_CAMPAIGN_ID_KEY_CHARS} characters of random data "
                "(deploy.sh makes one in Secret Manager)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = env.get(field.name.upper() if field.name != "project" else PROJECT)
            if raw is None or raw == "":
                continue
            values[field.name] = _coerce(field.name, field.default, raw)
        return cls(**values)  # type: ignore[arg-type]

    def require(self, *names: str) -> Settings:
        """Return self, or raise naming every listed variable that is unset."""
        missing = [name for name in names if not getattr(self, _attribute(name))]
        if missing:
            raise ConfigError(
                "missing required setting(s): " + ", ".join(missing)
                + " (set them in the environment)"
            )
        return self


def _attribute(env_name: str) -> str:
    return "project" if env_name == PROJECT else env_name.lower()


def _coerce(name: str, default: object, raw: str) -> object:
    try:
        if isinstance(default, int):
            value: float = int(raw)
        elif isinstance(default, float):
            value = float(raw)
        else:
            return raw
    except ValueError:
        raise ConfigError(f"{name.upper()}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name.upper()} must be positive, got {raw!r}")
    return value


def load(*required: str, env: Mapping[str, str] | None = None) -> Settings:
    """Settings for a function's cold start, failing fast on what it needs."""
    return Settings.from_env(env).require(*required)
