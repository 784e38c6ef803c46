"""One small error hierarchy; each error carries the HTTP status it maps to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class AppError(Exception):
    """An error whose message (and headers) are safe to show to the caller."""

    status: int = 500

    def __init__(self, msg: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.headers = dict(headers or {})


class BadRequest(AppError):
    status = 400


class Unauthorized(AppError):
    status = 401


class Forbidden(AppError):
    status = 403


class NotFound(AppError):
    status = 404


class MethodNotAllowed(AppError):
    status = 405

    def __init__(self, msg: str, allowed: Iterable[str]) -> None:
        super().__init__(msg, {"Allow": ", ".join(sorted(allowed))})


class PreconditionFailed(AppError):
    status = 412


class PayloadTooLarge(AppError):
    status = 413


class UnsupportedMediaType(AppError):
    status = 415


class UnprocessableContent(AppError):
    status = 422


class RetryLater(AppError):
    """A passing condition: the answer says when to try again (Retry-After)."""

    def __init__(self, msg: str, retry_after_seconds: int) -> None:
        super().__init__(msg, {"Retry-After": str(retry_after_seconds)})


class TooManyRequests(RetryLater):
    status = 429


class ServiceUnavailable(RetryLater):
    status = 503


class InvalidEvent(ValueError):
    """A click event that can never be counted (a poison message)."""
