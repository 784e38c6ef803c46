"""The admin's browser rules on their own: origins compared as browsers write them, headers by answer."""

from __future__ import annotations

import browser
import flask
import pytest

from shared.errors import Forbidden, UnsupportedMediaType

app = flask.Flask(__name__)


@pytest.mark.parametrize("origin, normalized", [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("HTTPS://Admin.Example:443", "https://admin.example"),
    ("http://admin.example:80", "http://admin.example"),
    ("http://[::1]:8080", "http://[::1]:8080"),
    ("null", None),
    ("", None),
    ("file://", None),
    ("ftp://admin.example", None),
    ("http://admin.example/path", None),
    ("http://user@admin.example", None),
    ("http://admin.example:99999", None),
    ("http://admin.example:x", None),
])
def test_origins_are_compared_as_scheme_host_and_port(origin: str, normalized: str | None) -> None:
    assert browser.normalized_origin(origin) == normalized


@pytest.mark.parametrize("base_url, headers, own", [
    ("http://127.0.0.1:8080", {}, "http://127.0.0.1:8080"),
    ("http://admin-abc.a.run.app", {"X-Forwarded-Proto": "https"}, "https://admin-abc.a.run.app"),
    ("http://admin-abc.a.run.app", {"X-Forwarded-Proto": "https, http"}, "https://admin-abc.a.run.app"),
    ("https://admin.example:443", {}, "https://admin.example"),
])
def test_the_admins_own_origin_is_its_scheme_and_host(base_url: str, headers: dict[str, str], own: str) -> None:
    with app.test_request_context("/admin/campaigns", base_url=base_url, headers=headers):
        assert browser.own_origin(flask.request) == own


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_reads_are_never_refused(method: str) -> None:
    headers = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}
    with app.test_request_context("/admin/campaigns", method=method, headers=headers):
        browser.refuse_other_origins(flask.request)
        browser.require_json(flask.request)


def test_any_other_method_is_a_state_change() -> None:
    with app.test_request_context("/admin/campaigns", method="PATCH", headers={"Sec-Fetch-Site": "same-site"}):
        with pytest.raises(Forbidden):
            browser.refuse_other_origins(flask.request)
        with pytest.raises(UnsupportedMediaType):
            browser.require_json(flask.request)


@pytest.mark.parametrize("mimetype, policy", [
    ("text/html", browser.DASHBOARD_POLICY), ("application/json", browser.DATA_POLICY),
    ("text/csv", browser.DATA_POLICY), ("text/javascript", browser.DATA_POLICY),
])
def test_the_page_gets_the_page_policy_and_everything_else_the_data_policy(mimetype: str, policy: str) -> None:
    answer = browser.secure(flask.Response("x", mimetype=mimetype))
    assert answer.headers["Content-Security-Policy"] == policy
    assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy
    assert (answer.headers["X-Content-Type-Options"], answer.headers["Referrer-Policy"]) == ("nosniff", "no-referrer")
