"""The admin function through functions-framework's test client, over the Firestore emulator."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any
from xml.etree import ElementTree

import jsonschema_rs
import pytest
from campaigns_api import ROUTES, routed_operations
from conftest import function_app
from google.cloud import firestore
from helpers import publish, read_png, read_qr_codes

from shared.events import ClickEvent, Producer
from shared.models import zero_counters
from shared.store import COUNTS, CampaignStore, campaign_ref, new_campaign_document

CAMPAIGN = {
    "redirect_url": "https://github.com/otobrglez/o7tracker",
    "platforms": ["WindowsPhone", "Android", "IPhone"],
}

P = Producer()


@pytest.fixture
def client(db: Any, admin_env: tuple[str, str]) -> Any:
    return function_app("admin", "admin").test_client()


@pytest.fixture
def auth(admin_env: tuple[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{admin_env[0]}:{admin_env[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def create(client: Any, auth: dict[str, str], body: Any = CAMPAIGN) -> dict[str, Any]:
    answer = client.post("/admin/campaigns", json=body, headers=auth)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.get_json()


def assert_error(answer: Any, status: int, fragment: str) -> None:
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["status"] == "error" and fragment in body["msg"]


def test_create_answers_the_original_shape(client: Any, auth: dict[str, str]) -> None:
    body = create(client, auth)
    assert isinstance(body["id"], int) and 0 < body["id"] <= 2**53 - 1
    assert body["redirect_url"] == CAMPAIGN["redirect_url"]
    assert body["platforms"] == CAMPAIGN["platforms"]
    assert body["created_at"].endswith("Z") and body["created_at"] == body["updated_at"]
    for field in ("click_count", "android_click_count", "iphone_click_count", "windowsphone_click_count"):
        assert body[field] == 0


def test_get_returns_what_was_created(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    answer = client.get(f"/admin/campaigns/{created['id']}", headers=auth)
    assert answer.status_code == 200 and answer.get_json() == created
    assert answer.headers["Cache-Control"] == "no-store"


def test_the_original_misspelt_path_is_served_too(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    assert client.get(f"/admin/campains/{created['id']}", headers=auth).get_json() == created


def test_list_is_newest_first_and_filters_on_every_listed_platform(client: Any, auth: dict[str, str]) -> None:
    both = create(client, auth, {"redirect_url": "https://a.example/", "platforms": ["Android", "IPhone"]})
    android = create(client, auth, {"redirect_url": "https://b.example/", "platforms": ["Android"]})
    windows = create(client, auth, {"redirect_url": "https://c.example/", "platforms": ["WindowsPhone"]})

    def ids(query: str) -> list[int]:
        answer = client.get(f"/admin/campaigns{query}", headers=auth)
        assert answer.status_code == 200
        return [c["id"] for c in answer.get_json()]

    assert ids("") == [windows["id"], android["id"], both["id"]]
    assert ids("?platforms=Android") == [android["id"], both["id"]]
    assert ids("?platforms=Android,IPhone") == [both["id"]]
    assert ids("?platforms=IPhone,WindowsPhone") == []
    assert_error(client.get("/admin/campaigns?platforms=Android,Symbian", headers=auth), 400, "Symbian")


def test_update_changes_fields_but_never_counters_or_created_at(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    answer = client.put(f"/admin/campaigns/{created['id']}", headers=auth,
                        json={"redirect_url": "https://new.example/", "click_count": 1000})
    assert answer.status_code == 200
    updated = answer.get_json()
    assert updated["redirect_url"] == "https://new.example/"
    assert updated["platforms"] == created["platforms"]
    assert updated["click_count"] == 0 and updated["created_at"] == created["created_at"]
    assert updated["updated_at"] > created["updated_at"]
    answer = client.put(f"/admin/campaigns/{created['id']}", headers=auth, json={"platforms": ["IPhone"]})
    assert answer.get_json()["platforms"] == ["IPhone"]
    assert answer.get_json()["redirect_url"] == "https://new.example/"


def test_delete_answers_204_then_the_campaign_is_gone(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    answer = client.delete(f"/admin/campaigns/{created['id']}", headers=auth)
    assert answer.status_code == 204 and answer.get_data() == b""
    assert "Content-Type" not in answer.headers and "Content-Length" not in answer.headers
    assert_error(client.get(f"/admin/campaigns/{created['id']}", headers=auth), 404, "not found")
    assert_error(client.delete(f"/admin/campaigns/{created['id']}", headers=auth), 404, "not found")
    assert client.get("/admin/campaigns", headers=auth).get_json() == []


@pytest.mark.parametrize("method, path", [
    ("GET", "/admin/campaigns"), ("POST", "/admin/campaigns"), ("GET", "/admin/campaigns/1"),
    ("PUT", "/admin/campaigns/1"), ("DELETE", "/admin/campaigns/1"), ("GET", "/admin/nothing"),
])
@pytest.mark.parametrize("credentials", [None, "admin:wrong", "ADMIN:s3cret-Pass", "admin:S3CRET-PASS"])
def test_every_endpoint_needs_the_exact_credentials(
    client: Any, method: str, path: str, credentials: str | None
) -> None:
    headers = {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()} if credentials else {}
    answer = client.open(path, method=method, headers=headers, json=CAMPAIGN)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert answer.get_json() == {"status": "error", "msg": "Missing or wrong credentials."}


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "malformed JSON"),
    (b"", "malformed JSON"),
    (b'["https://e.com"]', "JSON object"),
    (b'{"platforms": ["Android"]}', "missing field"),
    (b'{"redirect_url": "https://e.com"}', "missing field"),
    (b'{"redirect_url": 5, "platforms": ["Android"]}', "redirect_url"),
    (b'{"redirect_url": "javascript:alert(1)", "platforms": ["Android"]}', "http or https"),
    (b'{"redirect_url": "data:text/html,x", "platforms": ["Android"]}', "http or https"),
    (b'{"redirect_url": "/relative", "platforms": ["Android"]}', "http or https"),
    (b'{"redirect_url": "https://", "platforms": ["Android"]}', "http or https"),
    (b'{"redirect_url": "https://user:pw@evil.example/", "platforms": ["Android"]}', "must not contain user info"),
    (b'{"redirect_url": "https://user@evil.example/", "platforms": ["Android"]}', "must not contain user info"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], '
     b'"platform_urls": {"Android": "https://u:p@x.example/"}}', "'platform_urls.Android' must not contain user info"),
    (b'{"redirect_url": "https://e.com", "platforms": []}', "platforms"),
    (b'{"redirect_url": "https://e.com", "platforms": ["android"]}', "unsupported"),
    (b'{"redirect_url": "https://e.com", "platforms": "Android"}', "platforms"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "colour": "red"}', "unknown field"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "forward_query": "true"}',
     "'forward_query' must be true or false"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "forward_query": 1}',
     "'forward_query' must be true or false"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "forward_query": null}',
     "'forward_query' must be true or false"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "status": "Paused"}',
     "'status' must be one of active, paused, archived"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "starts_at": "tomorrow"}',
     "'starts_at' must be an RFC 3339 date-time"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "ends_at": "2026-06-01T00:00:00"}',
     "'ends_at' must be an RFC 3339 date-time with an offset"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "starts_at": "2026-06-02T00:00:00Z", '
     b'"ends_at": "2026-06-01T00:00:00Z"}', "'ends_at' must be after 'starts_at'"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "max_clicks": -5}', "'max_clicks'"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "max_clicks": "100"}', "'max_clicks'"),
    (b'{"redirect_url": "https://e.com", "platforms": ["Android"], "fallback_url": "/over"}',
     "'fallback_url' must be an absolute http or https URL"),
])
def test_bad_create_bodies_answer_400_and_write_nothing(
    client: Any, auth: dict[str, str], body: bytes, fragment: str
) -> None:
    answer = client.post("/admin/campaigns", data=body, headers={**auth, "Content-Type": "application/json"})
    assert_error(answer, 400, fragment)
    assert client.get("/admin/campaigns", headers=auth).get_json() == []


def test_bad_update_answers_400_and_changes_nothing(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    path = f"/admin/campaigns/{created['id']}"
    bad = {"redirect_url": "https://ok.example/", "platforms": ["Nokia"]}
    assert_error(client.put(path, headers=auth, json=bad), 400, "unsupported")
    assert client.get(path, headers=auth).get_json() == created


def test_oversized_bodies_answer_413(client: Any, auth: dict[str, str]) -> None:
    body = {**CAMPAIGN, "redirect_url": "https://e.com/?" + "a" * 20_000}
    assert_error(client.post("/admin/campaigns", headers=auth, json=body), 413, "larger than")


def test_oversized_bodies_without_a_length_answer_413_too(client: Any, auth: dict[str, str]) -> None:
    """A chunked body has no Content-Length: it is refused once it passes the limit (gunicorn, as deployed,
    says its input is terminated; so does ./run.sh's gateway)."""
    body = json.dumps({**CAMPAIGN, "redirect_url": "https://e.com/?" + "a" * 10_000_000}).encode()
    answer = client.post("/admin/campaigns", input_stream=io.BytesIO(body), headers={
        **auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True})
    assert_error(answer, 413, "body larger than 16384 bytes")
    assert client.get("/admin/campaigns", headers=auth).get_json() == []


# -- browser safety -------------------------------------------------------------------------------

STATE_CHANGES = [("POST", "/admin/campaigns"), ("PUT", "/admin/campaigns/{id}"), ("DELETE", "/admin/campaigns/{id}"),
                 ("POST", "/campaigns"), ("PUT", "/admin/campains/{id}/")]


@pytest.mark.parametrize("method, path", STATE_CHANGES)
@pytest.mark.parametrize("browser", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # a sibling host, or this host on another port
    {"Origin": "https://evil.example"},
    {"Origin": "http://localhost:8080"},  # this host, another port
    {"Origin": "https://localhost"},  # this host, another scheme
    {"Origin": "null"},  # a sandboxed frame, a file: page
    {"Origin": "http://localhost", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"},
])
def test_state_changes_a_browser_makes_for_another_origin_answer_403_and_change_nothing(
    client: Any, auth: dict[str, str], method: str, path: str, browser: dict[str, str]
) -> None:
    created = create(client, auth)
    target = path.format(id=created["id"])
    for credentials in (auth, {}):  # refused before the credentials are looked at
        answer = client.open(target, method=method, json={**CAMPAIGN, "redirect_url": "https://evil.example/"},
                             headers={**credentials, **browser})
        assert_error(answer, 403, "only the admin's own pages may change anything")
    assert client.get("/admin/campaigns", headers=auth).get_json() == [created]


@pytest.mark.parametrize("browser", [
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"},
    {"Sec-Fetch-Site": "none"},  # the user's own doing: a typed URL, a bookmark
    {"Origin": "HTTP://LocalHost:80"},
    {},  # not a browser: curl, scripts
])
def test_state_changes_from_the_admins_own_origin_or_no_browser_pass(
    client: Any, auth: dict[str, str], browser: dict[str, str]
) -> None:
    answer = client.post("/admin/campaigns", json=CAMPAIGN, headers={**auth, **browser})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    path = f"/admin/campaigns/{answer.get_json()['id']}"
    assert client.put(path, json={"platforms": ["IPhone"]}, headers={**auth, **browser}).status_code == 200
    assert client.delete(path, headers={**auth, **browser}).status_code == 204


def test_behind_a_tls_front_end_the_origin_has_the_forwarded_scheme(client: Any, auth: dict[str, str]) -> None:
    """Cloud Run ends TLS in front of the instance and says so in X-Forwarded-Proto; Host is the public host."""
    front = {"Host": "admin-abc-ew.a.run.app", "X-Forwarded-Proto": "https"}
    answer = client.post("/campaigns", json=CAMPAIGN, headers={
        **auth, **front, "Origin": "https://admin-abc-ew.a.run.app", "Sec-Fetch-Site": "same-origin"})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    for origin in ("http://admin-abc-ew.a.run.app", "https://admin-abc-ew.a.run.app:8443", "https://a.run.app"):
        assert_error(client.post("/campaigns", json=CAMPAIGN, headers={**auth, **front, "Origin": origin}), 403,
                     "refused")


def test_reads_from_other_origins_are_not_refused(client: Any, auth: dict[str, str]) -> None:
    """A read changes nothing, and another origin's page cannot see its answer."""
    other = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert client.get("/admin/campaigns", headers={**auth, **other}).status_code == 200
    assert client.open("/admin/campaigns", method="OPTIONS", headers=other).status_code == 401


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize("content_type, fragment", [
    (None, "Content-Type must be application/json; none was given"),
    ("text/plain", "Content-Type must be application/json, got 'text/plain'"),
    ("text/plain;charset=UTF-8", "got 'text/plain;charset=UTF-8'"),
    ("application/x-www-form-urlencoded", "Content-Type must be application/json"),
    ("multipart/form-data; boundary=x", "Content-Type must be application/json"),
    ("application/json-seq", "Content-Type must be application/json"),
    ("application/json; charset=latin-1", "JSON must be UTF-8, got charset='latin-1'"),
])
def test_bodies_not_declared_json_answer_415_and_change_nothing(
    client: Any, auth: dict[str, str], method: str, content_type: str | None, fragment: str
) -> None:
    """A form (text/plain can carry a body that parses as JSON) or a simple fetch cannot send application/json."""
    created = create(client, auth)
    path = "/admin/campaigns" if method == "POST" else f"/admin/campaigns/{created['id']}"
    body = json.dumps({**CAMPAIGN, "redirect_url": "https://evil.example/"})
    headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
    assert_error(client.open(path, method=method, data=body, headers=headers), 415, fragment)
    assert client.get("/admin/campaigns", headers=auth).get_json() == [created]


def test_json_declared_with_parameters_passes(client: Any, auth: dict[str, str]) -> None:
    for content_type in ("application/json; charset=utf-8", "Application/JSON;charset=UTF-8"):
        answer = client.post("/admin/campaigns", data=json.dumps(CAMPAIGN),
                             headers={**auth, "Content-Type": content_type})
        assert answer.status_code == 201, answer.get_data(as_text=True)


def test_a_delete_takes_no_body_and_no_other_declared_type(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    path = f"/admin/campaigns/{created['id']}"
    assert_error(client.delete(path, data="x", headers={**auth, "Content-Type": "text/plain"}), 415, "text/plain")
    assert client.delete(path, headers={**auth, "Content-Type": "application/json"}).status_code == 204


def test_routing_errors_come_before_the_content_type(client: Any, auth: dict[str, str]) -> None:
    headers = {**auth, "Content-Type": "text/plain"}
    assert_error(client.patch("/admin/campaigns", data="{}", headers=headers), 405, "not allowed")
    assert_error(client.post("/admin/nothing", data="{}", headers=headers), 404, "no such endpoint")
    assert_error(client.post("/admin/campaigns", data="{}", headers={"Content-Type": "text/plain"}), 401, "credentials")


def security_headers_are_right(answer: Any, path: str) -> None:
    assert answer.headers.get_all("X-Content-Type-Options") == ["nosniff"], path
    assert answer.headers.get_all("Referrer-Policy") == ["no-referrer"], path
    [policy] = answer.headers.get_all("Content-Security-Policy")
    assert "frame-ancestors 'none'" in policy, path
    if answer.mimetype == "text/html":
        assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy, path
    else:
        assert "default-src 'none'" in policy, path
    assert "Date" not in answer.headers, path  # the server adds its own
    if answer.status_code in (204, 304) or 300 <= answer.status_code < 400 and not answer.get_data():
        assert "Content-Type" not in answer.headers, path


def test_every_answer_carries_the_security_headers(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    path = f"/admin/campaigns/{created['id']}"
    answers = {
        "dashboard": client.get("/admin/", headers=auth),
        "redirect": client.get("/admin", headers=auth),
        "static": client.get("/admin/static/app.js", headers=auth),
        "not modified": client.get("/admin/static/app.css", headers={
            **auth, "If-None-Match": client.get("/admin/static/app.css", headers=auth).headers["ETag"]}),
        "openapi": client.get("/admin/openapi.json", headers=auth),
        "list": client.get("/admin/campaigns", headers=auth),
        "csv": client.get("/admin/campaigns?format=csv", headers=auth),
        "head": client.head(path, headers=auth),
        "created": client.post("/admin/campaigns", json=CAMPAIGN, headers=auth),
        "updated": client.put(path, json={"platforms": ["IPhone"]}, headers=auth),
        "401": client.get("/admin/campaigns"),
        "403": client.post("/admin/campaigns", json=CAMPAIGN, headers={**auth, "Origin": "https://evil.example"}),
        "404": client.get("/admin/nothing", headers=auth),
        "405": client.patch(path, json={}, headers=auth),
        "415": client.post("/admin/campaigns", data="{}", headers=auth),
        "framework 404": client.get("/admin/campaigns%0A", headers=auth),
        "favicon": client.get("/favicon.ico"),
        "deleted": client.delete(path, headers=auth),
    }
    assert answers["dashboard"].mimetype == "text/html" and answers["not modified"].status_code == 304
    assert answers["deleted"].status_code == 204 and answers["redirect"].status_code == 308
    for name, answer in answers.items():
        security_headers_are_right(answer, name)


def test_unknown_and_malformed_ids_answer_404(client: Any, auth: dict[str, str]) -> None:
    for path in ("/admin/campaigns/123", "/admin/campaigns/abc", "/admin/campaigns/-1",
                 f"/admin/campaigns/{2**53}"):
        assert_error(client.get(path, headers=auth), 404, "not found")
    assert_error(client.put("/admin/campaigns/123", headers=auth, json={"platforms": ["Android"]}), 404, "not found")


@pytest.mark.parametrize("method, path, allowed", [
    ("PATCH", "/admin/campaigns", "GET, HEAD, POST"),
    ("DELETE", "/admin/campains/", "GET, HEAD, POST"),
    ("POST", "/admin/campaigns/1", "DELETE, GET, HEAD, PUT"),
    ("OPTIONS", "/admin/campaigns/1/stats", "GET, HEAD"),
    ("PUT", "/admin/openapi.json", "GET, HEAD"),
    ("POST", "/admin/", "GET, HEAD"),
    ("DELETE", "/campaigns", "GET, HEAD, POST"),
])
def test_wrong_methods_answer_405_with_allow(
    client: Any, auth: dict[str, str], method: str, path: str, allowed: str
) -> None:
    answer = client.open(path, method=method, headers=auth, json=CAMPAIGN)
    assert_error(answer, 405, "not allowed")
    assert answer.headers["Allow"] == allowed


def test_created_ids_carry_the_keyed_check(client: Any, auth: dict[str, str]) -> None:
    from shared.config import Settings
    from shared.ids import keyed_ids

    ids = keyed_ids(Settings.from_env())  # the key as the functions read it
    assert all(ids.verify(create(client, auth)["id"]) for _ in range(5))


def test_without_a_campaign_id_key_the_function_refuses_to_start(
    admin_env: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.config import ConfigError

    monkeypatch.delenv("CAMPAIGN_ID_KEY")
    with pytest.raises(ConfigError, match="CAMPAIGN_ID_KEY"):
        function_app("admin", "admin")


def test_without_a_password_the_function_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import ConfigError

    monkeypatch.delenv("AUTH_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="AUTH_PASSWORD"):
        function_app("admin", "admin")


def test_platform_urls_are_accepted_and_returned_everywhere(client: Any, auth: dict[str, str]) -> None:
    stores = {"Android": "https://play.google.com/store/apps/details?id=com.outfit7.talkingtom",
              "IPhone": "https://apps.apple.com/app/id657500465"}
    created = create(client, auth, {**CAMPAIGN, "platform_urls": stores})
    assert created["platform_urls"] == stores
    path = f"/admin/campaigns/{created['id']}"
    assert client.get(path, headers=auth).get_json()["platform_urls"] == stores
    assert client.get("/admin/campaigns", headers=auth).get_json()[0]["platform_urls"] == stores
    answer = client.put(path, headers=auth, json={"platform_urls": {"Android": stores["Android"]}})
    assert answer.get_json()["platform_urls"] == {"Android": stores["Android"]}
    assert_error(client.put(path, headers=auth, json={"platform_urls": {"IPhone": "itms://x"}}), 400, "http")
    assert_error(client.put(path, headers=auth, json={"platform_urls": {"IPhone": "https://me@apps.apple.com/"}}),
                 400, "'platform_urls.IPhone' must not contain user info")
    assert_error(client.put(path, headers=auth, json={"redirect_url": "https://a:b@e.com/"}), 400, "user info")
    assert client.get(path, headers=auth).get_json()["platform_urls"] == {"Android": stores["Android"]}


def test_forward_query_is_off_unless_set_on_create_or_put(client: Any, auth: dict[str, str]) -> None:
    assert create(client, auth)["forward_query"] is False
    created = create(client, auth, {**CAMPAIGN, "forward_query": True})
    path = f"/admin/campaigns/{created['id']}"
    assert created["forward_query"] is True and get_json(client, auth, path)["forward_query"] is True
    assert [c["forward_query"] for c in get_json(client, auth, "/admin/campaigns")] == [True, False]
    answer = client.put(path, headers=auth, json={"forward_query": False})
    assert answer.status_code == 200 and answer.get_json()["forward_query"] is False
    assert get_json(client, auth, path)["redirect_url"] == CAMPAIGN["redirect_url"]
    assert_error(client.put(path, headers=auth, json={"forward_query": "yes"}), 400, "'forward_query'")
    assert get_json(client, auth, path)["forward_query"] is False
    # other changes leave it as it is
    client.put(path, headers=auth, json={"forward_query": True})
    assert client.put(path, headers=auth, json={"platforms": ["IPhone"]}).get_json()["forward_query"] is True


LIFECYCLE = {"status": "paused", "starts_at": "2026-06-01T09:00:00+02:00", "ends_at": "2026-07-01T00:00:00Z",
             "max_clicks": 1000, "fallback_url": "https://e.example/over"}


def test_lifecycle_fields_are_kept_shown_everywhere_and_unset_by_null(client: Any, auth: dict[str, str]) -> None:
    plain = create(client, auth)
    assert {k: plain[k] for k in LIFECYCLE} == {"status": "active", "starts_at": None, "ends_at": None,
                                               "max_clicks": None, "fallback_url": None}
    created = create(client, auth, {**CAMPAIGN, **LIFECYCLE})
    shown = {**LIFECYCLE, "starts_at": "2026-06-01T07:00:00.000000Z", "ends_at": "2026-07-01T00:00:00.000000Z"}
    path = f"/admin/campaigns/{created['id']}"
    assert {k: created[k] for k in LIFECYCLE} == shown
    assert {k: get_json(client, auth, path)[k] for k in LIFECYCLE} == shown
    [row] = read_csv(client.get("/admin/campaigns?format=csv&status=paused", headers=auth))
    assert {k: row[k] for k in LIFECYCLE} == {**shown, "max_clicks": "1000"}
    assert row["inactive_click_count"] == "0" and row["android_inactive_click_count"] == "0"
    # a PUT changes what it names; null unsets; what was read can be sent back
    resumed = client.put(path, headers=auth, json={"status": "active", "max_clicks": None}).get_json()
    assert (resumed["status"], resumed["max_clicks"], resumed["ends_at"]) == ("active", None, shown["ends_at"])
    sent_back = client.put(path, headers=auth, json=resumed).get_json()
    assert {**sent_back, "updated_at": None} == {**resumed, "updated_at": None}
    cleared = client.put(path, headers=auth, json={"starts_at": None, "ends_at": None, "fallback_url": None})
    assert {k: cleared.get_json()[k] for k in ("starts_at", "ends_at", "fallback_url")} == dict.fromkeys(
        ("starts_at", "ends_at", "fallback_url"))
    [row] = [r for r in read_csv(client.get("/admin/campaigns?format=csv", headers=auth))
             if r["id"] == str(created["id"])]
    assert (row["starts_at"], row["max_clicks"], row["fallback_url"], row["status"]) == ("", "", "", "active")


def test_an_end_before_the_stored_start_answers_400_and_changes_nothing(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth, {**CAMPAIGN, "starts_at": "2026-06-01T00:00:00Z"})
    path = f"/admin/campaigns/{created['id']}"
    assert_error(client.put(path, headers=auth, json={"ends_at": "2026-05-01T00:00:00Z", "status": "paused"}), 400,
                 "'ends_at' must be after 'starts_at' (2026-06-01T00:00:00.000000Z)")
    assert get_json(client, auth, path) == created


def test_the_list_leaves_archived_campaigns_out_unless_its_status_asks(client: Any, auth: dict[str, str]) -> None:
    active = create(client, auth)
    paused = create(client, auth, {**CAMPAIGN, "status": "paused"})
    archived = create(client, auth, {**CAMPAIGN, "status": "archived"})

    def ids(query: str) -> list[int]:
        return [c["id"] for c in get_json(client, auth, f"/admin/campaigns{query}")]

    assert ids("") == [paused["id"], active["id"]]
    assert ids("?status=archived") == [archived["id"]]
    assert ids("?status=active,archived&platforms=Android") == [archived["id"], active["id"]]
    page = get_json(client, auth, "/admin/campaigns?status=archived,paused&limit=1")
    assert [c["id"] for c in page["campaigns"]] == [archived["id"]]
    client.put(f"/admin/campaigns/{archived['id']}", headers=auth, json={"status": "active"})
    assert ids("") == [archived["id"], paused["id"], active["id"]]
    assert_error(client.get("/admin/campaigns?status=deleted", headers=auth), 400,
                 "unknown status(es) ['deleted'] in 'status'; known: ['active', 'paused', 'archived']")
    assert_error(client.get("/admin/campaigns?status=", headers=auth), 400, "unknown status(es) ['']")


def get_json(client: Any, auth: dict[str, str], path: str, **kwargs: Any) -> Any:
    answer = client.get(path, headers=auth, **kwargs)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def test_create_answers_201_with_the_location_of_the_new_campaign(client: Any, auth: dict[str, str]) -> None:
    answer = client.post("/admin/campaigns", json=CAMPAIGN, headers=auth)
    assert answer.status_code == 201
    location = answer.headers["Location"]
    assert location == f"/admin/campaigns/{answer.get_json()['id']}"
    assert get_json(client, auth, location) == answer.get_json()
    # the deployed function is also called on its own URL, without the /admin prefix
    answer = client.post("/campains/", json=CAMPAIGN, headers=auth)
    assert answer.headers["Location"] == f"/campaigns/{answer.get_json()['id']}"


def test_head_answers_what_get_would_without_a_body(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    paths = ["/admin/campaigns", "/admin/campaigns?limit=1", f"/admin/campaigns/{created['id']}",
             f"/admin/campaigns/{created['id']}/stats", f"/admin/campaigns/{created['id']}/stats?format=csv",
             "/admin/campaigns?format=csv", "/admin/openapi.json", "/admin/", "/admin/static/index.html"]
    for path in paths:
        got, head = client.get(path, headers=auth), client.head(path, headers=auth)
        assert (head.status_code, got.status_code) == (200, 200), path
        assert head.get_data() == b"" and got.get_data() != b"", path
        assert head.headers["Content-Type"] == got.headers["Content-Type"], path
    assert client.head("/admin/campaigns/123", headers=auth).status_code == 404
    assert client.head("/admin/campaigns").status_code == 401


def test_trailing_slashes_the_misspelling_and_the_bare_function_path_route_alike(
    client: Any, auth: dict[str, str]
) -> None:
    created = create(client, auth)
    for path in (f"/admin/campaigns/{created['id']}/", f"/admin/campains/{created['id']}",
                 f"/campaigns/{created['id']}", f"/campains/{created['id']}/"):
        assert get_json(client, auth, path)["id"] == created["id"], path
    assert get_json(client, auth, f"/campains/{created['id']}/stats/")["campaign_id"] == created["id"]
    assert_error(client.get("/admin/nothing", headers=auth), 404, "no such endpoint")
    assert_error(client.get(f"/admin/campaigns/{created['id']}/clicks", headers=auth), 404, "no such endpoint")


@pytest.mark.parametrize("depth", [33, 200, 5_000, 8_000])
def test_deeply_nested_json_answers_400(client: Any, auth: dict[str, str], depth: int) -> None:
    nested = "[" * depth + "]" * depth
    for body in (nested, f'{{"redirect_url": "https://e.com", "platforms": ["Android"], "click_count": {nested}}}',
                 f'{{"redirect_url": "https://e.com", "platforms": {nested}}}'):
        answer = client.post("/admin/campaigns", data=body, headers={**auth, "Content-Type": "application/json"})
        assert_error(answer, 400, "nested deeper than 32 levels")
    assert client.get("/admin/campaigns", headers=auth).get_json() == []


def test_nesting_within_the_limit_still_gets_a_clear_answer(client: Any, auth: dict[str, str]) -> None:
    body = {"redirect_url": "https://e.com", "platforms": json.loads("[" * 31 + "]" * 31)}
    assert_error(client.post("/admin/campaigns", json=body, headers=auth), 400, "unsupported platform")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "[1, NaN]", '{"x": [Infinity]}'])
def test_non_standard_json_constants_answer_400_even_in_ignored_fields(
    client: Any, auth: dict[str, str], constant: str
) -> None:
    body = f'{{"redirect_url": "https://e.com", "platforms": ["Android"], "click_count": {constant}}}'
    answer = client.post("/admin/campaigns", data=body, headers={**auth, "Content-Type": "application/json"})
    assert_error(answer, 400, "is not a JSON value")
    created = create(client, auth)
    answer = client.put(f"/admin/campaigns/{created['id']}", data=body.replace("https://e.com", "https://f.com"),
                        headers={**auth, "Content-Type": "application/json"})
    assert_error(answer, 400, "is not a JSON value")
    assert get_json(client, auth, f"/admin/campaigns/{created['id']}")["redirect_url"] == CAMPAIGN["redirect_url"]


def test_a_lone_surrogate_answers_400(client: Any, auth: dict[str, str]) -> None:
    body = '{"redirect_url": "https://e.com/\\ud800", "platforms": ["Android"]}'
    answer = client.post("/admin/campaigns", data=body, headers={**auth, "Content-Type": "application/json"})
    assert_error(answer, 400, "lone surrogate")


@pytest.mark.parametrize("path", ["/admin/campaigns%0A", "/admin/campaigns/1%0A/stats", "/favicon.ico",
                                  "/robots.txt"])
def test_paths_the_framework_answers_itself_get_the_json_error_too(
    client: Any, auth: dict[str, str], path: str
) -> None:
    for headers in (auth, {}):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 404 and answer.mimetype == "application/json", path
        assert answer.get_json()["status"] == "error"


def test_the_campaign_shows_as_of_and_a_tracking_link_per_platform(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth, {"redirect_url": "https://e.com/", "platforms": ["IPhone", "Android"]})
    assert created["as_of"] is None
    assert created["tracking_links"] == {
        "IPhone": f"http://localhost/track/{created['id']}?platform=IPhone",
        "Android": f"http://localhost/track/{created['id']}?platform=Android",
    }
    assert get_json(client, auth, "/admin/campaigns")[0]["tracking_links"] == created["tracking_links"]
    # what was read can be sent back as it is
    answer = client.put(f"/admin/campaigns/{created['id']}", json={**created, "platforms": ["Android"]},
                        headers=auth)
    assert answer.status_code == 200 and answer.get_json()["tracking_links"] == {
        "Android": f"http://localhost/track/{created['id']}?platform=Android"}


def test_tracking_links_use_track_base_url_when_set(
    db: Any, admin_env: tuple[str, str], auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACK_BASE_URL", "https://track-abc.a.run.app/")
    client = function_app("admin", "admin").test_client()
    created = create(client, auth, {"redirect_url": "https://e.com/", "platforms": ["WindowsPhone"]})
    assert created["tracking_links"] == {
        "WindowsPhone": f"https://track-abc.a.run.app/{created['id']}?platform=WindowsPhone"}


def test_a_bad_track_base_url_stops_the_cold_start(admin_env: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import ConfigError

    monkeypatch.setenv("TRACK_BASE_URL", "track.example.com")
    with pytest.raises(ConfigError, match="TRACK_BASE_URL"):
        function_app("admin", "admin")


# -- paging ---------------------------------------------------------------------------------------

def test_pages_follow_the_link_header_newest_first_to_the_end(client: Any, auth: dict[str, str]) -> None:
    ids = [create(client, auth, {"redirect_url": f"https://e{i}.example/",
                                 "platforms": ["Android", "IPhone"] if i % 2 else ["Android"]})["id"]
           for i in range(7)]
    newest_first = ids[::-1]
    assert [c["id"] for c in get_json(client, auth, "/admin/campaigns")] == newest_first

    seen: list[int] = []
    path: str | None = "/admin/campaigns?limit=3"
    pages = 0
    while path:
        answer = client.get(path, headers=auth)
        assert answer.status_code == 200
        page = answer.get_json()
        seen += [c["id"] for c in page["campaigns"]]
        pages += 1
        if page["next"] is None:
            assert "Link" not in answer.headers
            path = None
        else:
            link = re.fullmatch(r'<([^>]+)>; rel="next"', answer.headers["Link"])
            assert link is not None
            path = link.group(1)
            assert path.startswith("/admin/campaigns?") and "limit=3" in path
    assert seen == newest_first and pages == 3

    first = get_json(client, auth, "/admin/campaigns?limit=2&platforms=IPhone,Android")
    assert [c["id"] for c in first["campaigns"]] == [ids[5], ids[3]]
    answer = client.get(f"/admin/campaigns?limit=2&platforms=IPhone,Android&cursor={first['next']}", headers=auth)
    assert [c["id"] for c in answer.get_json()["campaigns"]] == [ids[1]]
    assert answer.get_json()["next"] is None


@pytest.mark.parametrize("query, fragment", [
    ("limit=0", "'limit' must be a whole number from 1 to 1000"),
    ("limit=1001", "from 1 to 1000"),
    ("limit=-1", "'limit'"),
    ("limit=ten", "'limit'"),
    ("limit=%D9%A3", "'limit'"),  # an Arabic-Indic digit three
    ("limit=" + "1" * 5000, "'limit'"),  # past the digits int() takes
    ("cursor=abc", "'cursor' needs 'limit'"),
    ("limit=5&cursor=%21%21not-a-cursor", "cursor"),
    ("platforms=Android,", "unsupported platform"),
    ("platforms=", "unsupported platform(s) ['']"),
    ("format=xml", "'format' must be one of json, csv"),
    ("limit=", "'limit'"),
    ("platform=Android", "unknown query parameter(s): 'platform'; this endpoint takes cursor, format, limit, "),
])
def test_bad_list_parameters_answer_400(client: Any, auth: dict[str, str], query: str, fragment: str) -> None:
    create(client, auth)
    assert_error(client.get(f"/admin/campaigns?{query}", headers=auth), 400, fragment)


# -- CSV ------------------------------------------------------------------------------------------

def read_csv(answer: Any) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.mimetype == "text/csv"
    text = answer.get_data(as_text=True)
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_the_campaign_list_as_csv_quotes_per_rfc_4180(client: Any, auth: dict[str, str]) -> None:
    tricky = 'https://e.example/?q="quoted",comma'
    created = create(client, auth, {"redirect_url": tricky, "platforms": ["Android", "IPhone"],
                                    "platform_urls": {"IPhone": "https://apps.apple.com/app/id1"}})
    for answer in (client.get("/admin/campaigns?format=csv", headers=auth),
                   client.get("/admin/campaigns", headers={**auth, "Accept": "text/csv"})):
        assert answer.headers["Content-Disposition"] == 'attachment; filename="campaigns.csv"'
        raw = answer.get_data(as_text=True)
        assert '"https://e.example/?q=""quoted"",comma"' in raw and '"Android,IPhone"' in raw
        [row] = read_csv(answer)
        assert row["id"] == str(created["id"]) and row["redirect_url"] == tricky
        assert row["platforms"] == "Android,IPhone" and row["click_count"] == "0" and row["as_of"] == ""
        assert row["iphone_url"] == "https://apps.apple.com/app/id1" and row["android_url"] == ""
        assert row["android_tracking_link"] == created["tracking_links"]["Android"]
        assert row["windowsphone_tracking_link"] == "" and row["forward_query"] == "false"
    # JSON stays the default, and wins when asked for explicitly
    assert client.get("/admin/campaigns", headers={**auth, "Accept": "*/*"}).mimetype == "application/json"
    answer = client.get("/admin/campaigns?format=json", headers={**auth, "Accept": "text/csv"})
    assert answer.mimetype == "application/json"


def test_a_csv_page_carries_the_link_to_the_next(client: Any, auth: dict[str, str]) -> None:
    for _ in range(3):
        create(client, auth)
    answer = client.get("/admin/campaigns?limit=2&format=csv", headers=auth)
    assert len(read_csv(answer)) == 2
    next_path = re.fullmatch(r'<([^>]+)>; rel="next"', answer.headers["Link"]).group(1)  # type: ignore[union-attr]
    assert "format=csv" in next_path
    assert len(read_csv(client.get(next_path, headers=auth))) == 1


# -- stats ----------------------------------------------------------------------------------------

@pytest.fixture
def count_clicks(project: str, pubsub_names: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Publish clicks at given times, then count them with the scheduled run, as deployed."""
    # Clicks on fixed dates (a daylight saving change) are older than the horizon of deployed runs.
    monkeypatch.setenv("REDELIVERY_HORIZON_DAYS", "3650")
    drain = function_app("aggregate", "aggregate_http").test_client()

    def count(events: list[ClickEvent]) -> None:
        publish(project, pubsub_names[0], [event.encode() for event in events])
        answer = drain.post("/")
        assert answer.status_code == 200 and answer.get_json()["counted"] == len(events), answer.get_json()

    return count


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def test_stats_by_day_follow_the_time_zone_through_a_23_hour_day(
    client: Any, auth: dict[str, str], count_clicks: Any
) -> None:
    campaign = create(client, auth)
    cid = campaign["id"]
    count_clicks([
        ClickEvent.new(cid, "Android", producer=P, now=at("2026-03-27T23:00:00+00:00")),  # 00:00, the 28th in Ljubljana
        ClickEvent.new(cid, "Android", producer=P, now=at("2026-03-28T22:59:59+00:00")),  # 23:59:59 on the 28th
        ClickEvent.new(cid, "IPhone", producer=P, now=at("2026-03-28T23:00:00+00:00")),  # midnight starting the 29th
        ClickEvent.new(cid, "WindowsPhone", producer=P, now=at("2026-03-29T21:30:00+00:00")),  # 23:30 CEST, the 29th
        ClickEvent.new(cid, "Android", producer=P, now=at("2026-03-29T21:45:00+00:00"), bot=True),
        ClickEvent.new(cid, "IPhone", producer=P, now=at("2026-03-29T22:00:00+00:00")),  # midnight starting the 30th
        ClickEvent.new(cid, "IPhone", producer=P, now=at("2026-03-30T22:00:00+00:00")),  # the 31st: outside
    ])
    stats = get_json(client, auth, f"/admin/campaigns/{cid}/stats?from=2026-03-28&to=2026-03-31"
                                   "&tz=Europe/Ljubljana&granularity=day")
    assert (stats["campaign_id"], stats["granularity"], stats["tz"]) == (cid, "day", "Europe/Ljubljana")
    assert (stats["from"], stats["to"]) == ("2026-03-28T00:00:00+01:00", "2026-03-31T00:00:00+02:00")
    assert [(b["start"], b["end"]) for b in stats["buckets"]] == [
        ("2026-03-28T00:00:00+01:00", "2026-03-29T00:00:00+01:00"),
        ("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),  # 23 hours
        ("2026-03-30T00:00:00+02:00", "2026-03-31T00:00:00+02:00"),
    ]
    assert [b["click_count"] for b in stats["buckets"]] == [2, 2, 1]
    assert [b["android_click_count"] for b in stats["buckets"]] == [2, 0, 0]
    assert [b["iphone_click_count"] for b in stats["buckets"]] == [0, 1, 1]
    assert [b["windowsphone_click_count"] for b in stats["buckets"]] == [0, 1, 0]
    assert [b["bot_click_count"] for b in stats["buckets"]] == [0, 1, 0]
    assert stats["totals"] == {**zero_counters(), "click_count": 5, "android_click_count": 2, "iphone_click_count": 2,
                               "windowsphone_click_count": 1, "bot_click_count": 1, "unique_visitors": 0}
    assert stats["as_of"] is not None and stats["as_of"].endswith("Z")

    by_hour = get_json(client, auth, f"/admin/campaigns/{cid}/stats?from=2026-10-25&to=2026-10-26"
                                     "&tz=Europe/Ljubljana&granularity=hour")
    assert len(by_hour["buckets"]) == 25 and by_hour["totals"]["click_count"] == 0


def test_stats_default_to_the_last_seven_utc_days_by_day(
    client: Any, auth: dict[str, str], count_clicks: Any
) -> None:
    cid = create(client, auth)["id"]
    now = datetime.now(timezone.utc)
    count_clicks([ClickEvent.new(cid, "Android", producer=P, now=now),
                  ClickEvent.new(cid, "IPhone", producer=P, now=now),
                  ClickEvent.new(cid, "Android", producer=P, now=now - timedelta(days=3)),
                  ClickEvent.new(cid, "Android", producer=P, now=now - timedelta(days=30))])
    stats = get_json(client, auth, f"/admin/campaigns/{cid}/stats")
    assert (stats["granularity"], stats["tz"], len(stats["buckets"])) == ("day", "UTC", 7)
    assert [b["click_count"] for b in stats["buckets"]] == [0, 0, 0, 1, 0, 0, 2]
    assert stats["buckets"][-1]["start"] == now.strftime("%Y-%m-%dT00:00:00+00:00")
    assert stats["totals"]["click_count"] == 3


def test_stats_as_csv_one_row_per_bucket(client: Any, auth: dict[str, str], count_clicks: Any) -> None:
    cid = create(client, auth)["id"]
    count_clicks([ClickEvent.new(cid, "IPhone", producer=P, now=at("2026-06-01T10:20:00+00:00")),
                  ClickEvent.new(cid, "Android", producer=P, now=at("2026-06-01T11:40:00+00:00"), inactive=True)])
    query = "from=2026-06-01T09:00Z&to=2026-06-01T12:00Z&granularity=hour&tz=Asia/Tokyo"
    for answer in (client.get(f"/admin/campaigns/{cid}/stats?{query}&format=csv", headers=auth),
                   client.get(f"/admin/campaigns/{cid}/stats?{query}", headers={**auth, "Accept": "text/csv"})):
        assert answer.headers["Content-Disposition"] == f'attachment; filename="campaign-{cid}-stats-hour.csv"'
        rows = read_csv(answer)
        assert [(r["start"], r["iphone_click_count"], r["inactive_click_count"], r["android_inactive_click_count"])
                for r in rows] == [("2026-06-01T18:00:00+09:00", "0", "0", "0"),
                                   ("2026-06-01T19:00:00+09:00", "1", "0", "0"),
                                   ("2026-06-01T20:00:00+09:00", "0", "1", "1")]
        assert list(rows[0]) == ["start", "end", "click_count", "android_click_count", "iphone_click_count",
                                 "windowsphone_click_count", "bot_click_count", "inactive_click_count",
                                 "android_inactive_click_count", "iphone_inactive_click_count",
                                 "windowsphone_inactive_click_count", "unique_visitors", "range_unique_visitors"]
    stats = get_json(client, auth, f"/admin/campaigns/{cid}/stats?{query}")
    assert (stats["totals"]["click_count"], stats["totals"]["inactive_click_count"]) == (1, 1)


def test_unique_visitors_count_each_visitor_once_per_bucket_and_over_the_range(
    client: Any, auth: dict[str, str], count_clicks: Any
) -> None:
    cid = create(client, auth)["id"]
    first, second = "a" * 16, "b" * 16
    count_clicks([
        ClickEvent.new(cid, "Android", producer=P, now=at("2026-06-01T10:05:00+00:00"), visitor=first),
        ClickEvent.new(cid, "IPhone", producer=P, now=at("2026-06-01T10:50:00+00:00"), visitor=first),
        ClickEvent.new(cid, "Android", producer=P, now=at("2026-06-01T11:10:00+00:00"), visitor=first),
        ClickEvent.new(cid, "Android", producer=P, now=at("2026-06-01T11:20:00+00:00"), visitor=second),
        ClickEvent.new(cid, "Android", producer=P, now=at("2026-06-01T11:30:00+00:00")),  # made before visitor keys
        ClickEvent.new(cid, "Android", producer=P, now=at("2026-06-01T11:40:00+00:00"), bot=True, visitor="c" * 16),
        ClickEvent.new(cid, "Android", producer=P, now=at("2026-06-01T11:50:00+00:00"), inactive=True,
                       visitor="d" * 16),  # counted apart, as a bot is: no visitor either
    ])
    query = f"/admin/campaigns/{cid}/stats?from=2026-06-01T09:00Z&to=2026-06-01T13:00Z&granularity=hour"
    stats = get_json(client, auth, query)
    assert [b["click_count"] for b in stats["buckets"]] == [0, 2, 3, 0]
    # One visitor on two platforms in an hour is one; the first visitor, in two hours, is one over the range.
    assert [b["unique_visitors"] for b in stats["buckets"]] == [0, 1, 2, 0]
    assert stats["totals"]["unique_visitors"] == 2
    rows = read_csv(client.get(f"{query}&format=csv", headers=auth))
    assert [(r["unique_visitors"], r["range_unique_visitors"]) for r in rows] == [
        ("0", "2"), ("1", "2"), ("2", "2"), ("0", "2")]
    by_day = get_json(client, auth, f"/admin/campaigns/{cid}/stats?from=2026-06-01&to=2026-06-02&tz=Asia/Tokyo")
    assert [b["unique_visitors"] for b in by_day["buckets"]] == [2] and by_day["totals"]["unique_visitors"] == 2


@pytest.mark.parametrize("query, fragment", [
    ("from=yesterday", "'from' must be an ISO 8601"),
    ("to=2026-02-30", "'to' must be an ISO 8601"),
    ("from=2026-11-02&to=2026-11-01", "'to' must be later than 'from'"),
    ("from=2026-11-01&to=2026-11-01", "later than"),
    ("tz=Europe/Atlantis", "IANA time zone"),
    ("granularity=minute", "'granularity' must be one of hour, day"),
    ("granularity=hour&from=2026-01-01&to=2026-03-01", "range too long: at most 744 buckets by hour"),
    ("from=2020-01-01&to=2026-01-01", "at most 366 buckets by day"),
    ("from=0001-01-01", "within the years"),
    ("format=pdf", "'format'"),
    ("granularity=", "'granularity'"),
    ("tz=", "IANA"),
    ("from=", "ISO 8601"),
    ("since=2026-01-01", "unknown query parameter(s): 'since'; this endpoint takes"),
])
def test_bad_stats_parameters_answer_400(client: Any, auth: dict[str, str], query: str, fragment: str) -> None:
    cid = create(client, auth)["id"]
    assert_error(client.get(f"/admin/campaigns/{cid}/stats?{query}", headers=auth), 400, fragment)


def test_endpoints_without_query_parameters_refuse_any(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    for path in (f"/admin/campaigns/{created['id']}?format=csv", "/admin/openapi.json?v=2", "/admin/?x=1"):
        assert_error(client.get(path, headers=auth), 400, "this endpoint takes none")
    assert_error(client.delete(f"/admin/campaigns/{created['id']}?force=1", headers=auth), 400, "'force'")
    assert get_json(client, auth, f"/admin/campaigns/{created['id']}") == created


def test_stats_of_an_unknown_campaign_answer_404(client: Any, auth: dict[str, str]) -> None:
    assert_error(client.get("/admin/campaigns/123/stats", headers=auth), 404, "not found")
    assert_error(client.get("/admin/campaigns/x/stats", headers=auth), 404, "not found")


# -- the dashboard and static files -----------------------------------------------------------

def test_the_dashboard_and_its_files_are_served_behind_auth(client: Any, auth: dict[str, str]) -> None:
    page = client.get("/admin/", headers=auth)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.get_data() == client.get("/admin/static/index.html", headers=auth).get_data()
    bare = client.get("/admin?x=1", headers=auth)
    assert bare.status_code == 308 and bare.headers["Location"] == "/admin/?x=1"
    assert client.get("/admin", headers=auth).headers["Location"] == "/admin/"
    assert client.get("/admin/", headers={}).status_code == 401
    assert client.get("/admin/static/index.html").status_code == 401
    for path in ("/admin/static/missing.js", "/admin/static/%2e%2e/main.py", "/admin/static/..%2fmain.py",
                 "/admin/static/%2e%2e%2f%2e%2e%2fshared/config.py", "/admin/static/", "/admin/static//etc/passwd",
                 "/admin/static/" + "x" * 300):  # a name longer than the file system allows
        assert_error(client.get(path, headers=auth), 404, "")


# -- QR codes -------------------------------------------------------------------------------------

def test_the_qr_codes_read_back_as_the_tracking_links(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    for platform, link in created["tracking_links"].items():
        answer = client.get(f"/admin/campaigns/{created['id']}/qr.png?platform={platform}", headers=auth)
        assert answer.status_code == 200 and answer.mimetype == "image/png"
        assert answer.headers["Cache-Control"] == "private, max-age=3600"
        assert answer.headers["Content-Disposition"] == \
            f'inline; filename="campaign-{created["id"]}-{platform.lower()}-qr.png"'
        assert read_qr_codes(answer.get_data()) == [link]
    # without a platform, the link whose platform the track function tells by the User-Agent
    answer = client.get(f"/admin/campains/{created['id']}/qr.png", headers=auth)
    assert read_qr_codes(answer.get_data()) == [f"http://localhost/track/{created['id']}"]


def test_the_qr_codes_follow_track_base_url(
    db: Any, admin_env: tuple[str, str], auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACK_BASE_URL", "https://track-abc.a.run.app")
    client = function_app("admin", "admin").test_client()
    created = create(client, auth, {"redirect_url": "https://e.com/", "platforms": ["IPhone"]})
    answer = client.get(f"/campaigns/{created['id']}/qr.png?platform=IPhone", headers=auth)
    assert read_qr_codes(answer.get_data()) == [created["tracking_links"]["IPhone"]]
    assert created["tracking_links"]["IPhone"].startswith("https://track-abc.a.run.app/")


def test_scale_sets_the_size_of_a_module(client: Any, auth: dict[str, str]) -> None:
    path = f"/admin/campaigns/{create(client, auth)['id']}/qr"
    modules, _, _ = read_png(client.get(f"{path}.png?platform=Android&scale=1", headers=auth).get_data())
    assert 21 + 8 <= modules <= 177 + 8  # a QR code's sizes, with its quiet zone
    for scale, pixels in ((None, 8 * modules), (3, 3 * modules), (40, 40 * modules)):
        query = f"?platform=Android&scale={scale}" if scale else "?platform=Android"
        png = client.get(f"{path}.png{query}", headers=auth).get_data()
        assert read_png(png)[:2] == (pixels, pixels)
        answer = client.get(f"{path}.svg{query}", headers=auth)
        assert answer.mimetype == "image/svg+xml" and answer.headers["Cache-Control"] == "private, max-age=3600"
        svg = ElementTree.fromstring(answer.get_data())
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert (svg.get("width"), svg.get("height")) == (str(pixels), str(pixels))


@pytest.mark.parametrize("query, fragment", [
    ("?scale=0", "'scale' must be a whole number from 1 to 40, got '0'"),
    ("?scale=41", "'scale' must be a whole number from 1 to 40"),
    ("?scale=2.5", "'scale' must be a whole number"),
    ("?scale=-3", "'scale' must be a whole number"),
    ("?scale=", "'scale' must be a whole number"),
    ("?scale=" + "9" * 5000, "'scale' must be a whole number"),
    ("?platform=WindowsPhone", "'platform' must be one of this campaign's platforms (Android, IPhone), got "
                               "'WindowsPhone'"),
    ("?platform=android", "'platform' must be one of this campaign's platforms"),
    ("?platform=", "'platform' must be one of this campaign's platforms"),
    ("?size=3", "unknown query parameter(s): 'size'"),
])
def test_bad_qr_parameters_answer_400(client: Any, auth: dict[str, str], query: str, fragment: str) -> None:
    created = create(client, auth, {**CAMPAIGN, "platforms": ["Android", "IPhone"]})
    for kind in ("svg", "png"):
        assert_error(client.get(f"/admin/campaigns/{created['id']}/qr.{kind}{query}", headers=auth), 400, fragment)


def test_qr_codes_of_unknown_campaigns_answer_404_and_all_need_credentials(client: Any, auth: dict[str, str]) -> None:
    created = create(client, auth)
    for kind in ("svg", "png"):
        assert_error(client.get(f"/admin/campaigns/123/qr.{kind}", headers=auth), 404, "not found")
        assert_error(client.get(f"/admin/campaigns/x/qr.{kind}?platform=Android", headers=auth), 404, "not found")
        assert client.get(f"/admin/campaigns/{created['id']}/qr.{kind}").status_code == 401
        head = client.head(f"/admin/campaigns/{created['id']}/qr.{kind}?platform=IPhone", headers=auth)
        assert head.status_code == 200 and head.get_data() == b""
        assert head.headers["Content-Type"].startswith(f"image/{kind}")
    assert_error(client.get(f"/admin/campaigns/{created['id']}/qr.gif", headers=auth), 404, "no such endpoint")


# -- OpenAPI --------------------------------------------------------------------------------------

@pytest.fixture
def openapi_doc(client: Any, auth: dict[str, str]) -> dict[str, Any]:
    return get_json(client, auth, "/admin/openapi.json")


def test_the_openapi_document_names_every_route_and_method_and_nothing_else(openapi_doc: dict[str, Any]) -> None:
    assert openapi_doc["openapi"].startswith("3.1") and openapi_doc["servers"] == [{"url": "/admin"}]
    documented = {(path, method.upper()) for path, ops in openapi_doc["paths"].items() for method in ops}
    routed = {(path, method) for path, method, _ in routed_operations()}
    assert documented == routed
    rules = {(rule.rule, method) for rule in ROUTES.iter_rules() for method in rule.methods or ()}
    assert len(rules) == len(routed) and {"GET", "HEAD"} <= {method for _, method in rules}


def validator(doc: dict[str, Any], name: str) -> jsonschema_rs.Draft202012Validator:
    """A schema of the document's components, its references turned into local ones."""
    schema = {**doc["components"]["schemas"][name], "$defs": doc["components"]["schemas"]}
    text = json.dumps(schema).replace("#/components/schemas/", "#/$defs/")
    return jsonschema_rs.Draft202012Validator(json.loads(text), validate_formats=True)


def test_real_answers_match_the_documented_schemas(
    client: Any, auth: dict[str, str], openapi_doc: dict[str, Any], count_clicks: Any
) -> None:
    created = create(client, auth, {**CAMPAIGN, "platform_urls": {"Android": "https://play.google.com/x"}})
    count_clicks([ClickEvent.new(created["id"], "Android", producer=P),
                  ClickEvent.new(created["id"], "IPhone", producer=P, inactive=True)])
    campaign = get_json(client, auth, f"/admin/campaigns/{created['id']}")
    limited = create(client, auth, {**CAMPAIGN, **LIFECYCLE})
    for body in (created, campaign, limited):
        validator(openapi_doc, "Campaign").validate(body)
    validator(openapi_doc, "NewCampaign").validate({**CAMPAIGN, **LIFECYCLE})
    validator(openapi_doc, "CampaignChanges").validate({"ends_at": None})
    validator(openapi_doc, "CampaignPage").validate(get_json(client, auth, "/admin/campaigns?limit=5"))
    validator(openapi_doc, "Stats").validate(get_json(client, auth, f"/admin/campaigns/{created['id']}/stats"))
    validator(openapi_doc, "Error").validate(client.get("/admin/campaigns/1", headers=auth).get_json())
    validator(openapi_doc, "NewCampaign").validate(campaign)  # what was read can be sent back


def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


@pytest.fixture
def limited(db: Any, admin_env: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The admin function allowing three failed logins per client per minute."""
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "3")
    monkeypatch.setenv("LOGIN_WINDOW_SECONDS", "60")
    return function_app("admin", "admin").test_client()


def get_as(client: Any, headers: dict[str, str], address: str = "198.51.100.1") -> Any:
    return client.get("/admin/campaigns", headers=headers, environ_base={"REMOTE_ADDR": address})


def test_repeated_failed_logins_from_one_client_answer_429_until_the_window_ends(
    limited: Any, auth: dict[str, str]
) -> None:
    for _ in range(3):
        assert get_as(limited, basic("admin:guess")).status_code == 401
    answer = get_as(limited, basic("admin:guess"))
    assert_error(answer, 429, "Too many failed logins")
    assert 55 <= int(answer.headers["Retry-After"]) <= 60
    assert get_as(limited, auth).status_code == 429  # a right guess must not stand out now
    assert get_as(limited, auth, address="198.51.100.2").status_code == 200  # other clients are not blocked
    assert get_as(limited, basic("admin:guess"), address="198.51.100.2").status_code == 401


def test_the_block_lifts_when_the_window_ends(
    db: Any, admin_env: tuple[str, str], auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "1")
    monkeypatch.setenv("LOGIN_WINDOW_SECONDS", "1")
    client = function_app("admin", "admin").test_client()
    assert get_as(client, basic("admin:guess")).status_code == 401
    answer = get_as(client, auth)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
    time.sleep(1.2)
    assert get_as(client, auth).status_code == 200


def test_successful_logins_and_requests_without_credentials_do_not_count(limited: Any, auth: dict[str, str]) -> None:
    for _ in range(10):
        assert get_as(limited, auth).status_code == 200
        assert get_as(limited, {}).status_code == 401  # a browser before its login prompt
    for _ in range(3):
        assert get_as(limited, basic("admin:guess")).status_code == 401
    assert get_as(limited, basic("admin:guess")).status_code == 429


def test_on_cloud_run_the_client_is_the_last_forwarded_for_hop(
    limited: Any, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K_SERVICE", "admin")  # set by Cloud Run on every deployed function
    client = function_app("admin", "admin").test_client()
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    for hop in range(3):
        # What the client itself sends comes first, and changes nothing.
        spoofed = {"X-Forwarded-For": f"198.51.100.{hop}, 203.0.113.7"}
        assert get_as(client, {**basic("admin:guess"), **spoofed}).status_code == 401
    assert get_as(client, {**auth, **attacker}).status_code == 429
    # Every client reaches the instance from the front end's address; only the attacker is blocked.
    assert get_as(client, {**auth, "X-Forwarded-For": "203.0.113.8"}).status_code == 200


def test_off_cloud_run_a_forwarded_for_header_does_not_escape_the_limit(limited: Any, auth: dict[str, str]) -> None:
    for hop in range(3):
        assert get_as(limited, {**basic("admin:guess"), "X-Forwarded-For": f"203.0.113.{hop}"}).status_code == 401
    assert get_as(limited, {**auth, "X-Forwarded-For": "203.0.113.99"}).status_code == 429


# -- safe retries: Idempotency-Key ----------------------------------------------------------------

def create_once(client: Any, auth: dict[str, str], key: str, body: Any = CAMPAIGN) -> Any:
    return client.post("/admin/campaigns", json=body, headers={**auth, "Idempotency-Key": key})


def listed_ids(client: Any, auth: dict[str, str]) -> list[int]:
    return [c["id"] for c in get_json(client, auth, "/admin/campaigns")]


def test_a_create_retried_with_its_key_answers_the_first_campaign_and_creates_nothing(
    client: Any, auth: dict[str, str]
) -> None:
    first = create_once(client, auth, "retry-1")
    assert first.status_code == 201
    # The same JSON, its keys in another order and spaced otherwise.
    same_body = json.dumps(dict(reversed(CAMPAIGN.items())), indent=2)
    again = client.post("/admin/campaigns", data=same_body, headers={
        **auth, "Idempotency-Key": "retry-1", "Content-Type": "application/json"})
    assert again.status_code == 201 and again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"] and again.headers["ETag"] == first.headers["ETag"]
    assert listed_ids(client, auth) == [first.get_json()["id"]]
    other = create_once(client, auth, "retry-2")
    assert other.status_code == 201 and listed_ids(client, auth) == [other.get_json()["id"], first.get_json()["id"]]


def test_the_same_key_with_another_body_answers_422_and_creates_nothing(client: Any, auth: dict[str, str]) -> None:
    first = create_once(client, auth, "k").get_json()
    assert_error(create_once(client, auth, "k", {**CAMPAIGN, "platforms": ["Android"]}), 422,
                 f"already created campaign {first['id']} from another body")
    assert listed_ids(client, auth) == [first["id"]]


def test_keys_are_each_users_own(client: Any, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    first = create_once(client, auth, "k").get_json()
    monkeypatch.setenv("AUTH_USER", "another-admin")
    other_user = function_app("admin", "admin").test_client()
    token = base64.b64encode(b"another-admin:s3cret-Pass").decode()
    second = create_once(other_user, {"Authorization": f"Basic {token}"}, "k")
    assert second.status_code == 201 and second.get_json()["id"] != first["id"]


def test_concurrent_creates_with_one_key_make_one_campaign(
    client: Any, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = 4
    barrier = threading.Barrier(requests, timeout=30)
    claim_key = CampaignStore._claim_key

    def claimed_together(self: CampaignStore, *args: Any) -> Any:
        earlier = claim_key(self, *args)
        if earlier is None:  # found the key new: commit only once every request has found it so
            barrier.wait()
        return earlier

    monkeypatch.setattr(CampaignStore, "_claim_key", claimed_together)
    app = client.application
    with ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(lambda _: create_once(app.test_client(), auth, "one"), range(requests)))
    assert [a.status_code for a in answers] == [201] * requests
    assert len({a.get_json()["id"] for a in answers}) == 1
    assert listed_ids(client, auth) == [answers[0].get_json()["id"]]

    bodies = [CAMPAIGN, {**CAMPAIGN, "redirect_url": "https://other.example/"}]
    barrier = threading.Barrier(len(bodies), timeout=30)
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: create_once(app.test_client(), auth, "two", body), bodies))
    assert sorted(a.status_code for a in answers) == [201, 422]
    assert len(listed_ids(client, auth)) == 2


def test_a_key_past_its_24_hours_creates_again(client: Any, auth: dict[str, str], db: Any) -> None:
    first = create_once(client, auth, "k").get_json()
    [record] = db.collection("idempotency").stream()
    assert record.get("campaign_id") == first["id"]
    # Past expire_at, before TTL removes it (which takes up to a day more).
    assert timedelta(hours=23, minutes=59) < record.get("expire_at") - datetime.now(timezone.utc) <= timedelta(hours=24)
    record.reference.update({"expire_at": datetime.now(timezone.utc) - timedelta(seconds=1)})
    second = create_once(client, auth, "k")
    assert second.status_code == 201 and second.get_json()["id"] != first["id"]
    assert create_once(client, auth, "k").get_json()["id"] == second.get_json()["id"]  # the new one holds now
    record.reference.delete()  # as TTL removes it
    third = create_once(client, auth, "k")
    assert third.status_code == 201 and len(listed_ids(client, auth)) == 3


def test_a_retry_after_its_campaign_was_deleted_answers_404(client: Any, auth: dict[str, str]) -> None:
    first = create_once(client, auth, "k").get_json()
    assert client.delete(f"/admin/campaigns/{first['id']}", headers=auth).status_code == 204
    assert_error(create_once(client, auth, "k"), 404, f"campaign {first['id']}, which this Idempotency-Key created, "
                                                      "has since been deleted")
    assert listed_ids(client, auth) == []


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_bad_idempotency_keys_answer_400_and_create_nothing(client: Any, auth: dict[str, str], key: str) -> None:
    assert_error(create_once(client, auth, key), 400, "Idempotency-Key must be 1 to 255 printable ASCII characters")
    assert listed_ids(client, auth) == []
    assert create_once(client, auth, "~ " * 127 + "!").status_code == 201


# -- ETag, If-None-Match, If-Match ----------------------------------------------------------------

def version(etag: str) -> str:
    """The campaign version an ETag names (its first part); the rest digests the answer."""
    match = re.fullmatch(r'"([0-9a-f]{16})\.[0-9a-f]{16}"', etag)
    assert match, etag
    return match.group(1)


def test_get_answers_304_while_the_answer_is_the_one_tagged(
    client: Any, auth: dict[str, str], count_clicks: Any
) -> None:
    created = client.post("/admin/campaigns", json=CAMPAIGN, headers=auth)
    tag = created.headers["ETag"]
    path = f"/admin/campaigns/{created.get_json()['id']}"
    assert client.get(path, headers=auth).headers["ETag"] == tag
    for held in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        answer = client.get(path, headers={**auth, "If-None-Match": held})
        assert answer.status_code == 304 and answer.get_data() == b"", held
        assert answer.headers["ETag"] == tag and "Content-Type" not in answer.headers
    # Counted clicks change the answer, so its tag, though not the campaign's version.
    count_clicks([ClickEvent.new(created.get_json()["id"], "Android", producer=P)])
    counted = client.get(path, headers={**auth, "If-None-Match": tag})
    assert counted.status_code == 200 and counted.get_json()["click_count"] == 1
    assert counted.headers["ETag"] != tag and version(counted.headers["ETag"]) == version(tag)
    edited = client.put(path, json={"forward_query": True}, headers=auth)
    assert version(edited.headers["ETag"]) != version(tag)
    assert client.get(path, headers={**auth, "If-None-Match": counted.headers["ETag"]}).status_code == 200


def test_if_match_on_put_and_delete_answers_412_when_stale_and_writes_nothing(
    client: Any, auth: dict[str, str]
) -> None:
    created = client.post("/admin/campaigns", json=CAMPAIGN, headers=auth)
    path, read = created.headers["Location"], created.headers["ETag"]
    first = client.put(path, json={"redirect_url": "https://first.example/"}, headers={**auth, "If-Match": read})
    assert first.status_code == 200
    stale = client.put(path, json={"redirect_url": "https://second.example/"}, headers={**auth, "If-Match": read})
    assert_error(stale, 412, "has changed since it was read")
    assert_error(client.delete(path, headers={**auth, "If-Match": read}), 412, "has changed since it was read")
    now = first.headers["ETag"]
    assert client.delete(path, headers={**auth, "If-Match": f"W/{now}"}).status_code == 412  # compared strongly
    assert get_json(client, auth, path)["redirect_url"] == "https://first.example/"
    star = client.put(path, json={"forward_query": True}, headers={**auth, "If-Match": "*"})
    assert star.status_code == 200
    assert client.delete(path, headers={**auth, "If-Match": f'"nope", {star.headers["ETag"]}'}).status_code == 204
    assert_error(client.delete(path, headers={**auth, "If-Match": star.headers["ETag"]}), 404, "not found")
    assert_error(client.put(path, json={"forward_query": False}, headers={**auth, "If-Match": "*"}), 404, "not found")


@pytest.mark.parametrize("tags", ['"", "3@f2#9"', '""', "", ",", "W/", "garbage"])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_an_if_match_naming_no_version_answers_412(client: Any, auth: dict[str, str], tags: str, method: str) -> None:
    path = client.post("/admin/campaigns", json=CAMPAIGN, headers=auth).headers["Location"]
    answer = client.open(path, method=method, json={"forward_query": True} if method == "PUT" else None,
                         headers={**auth, "If-Match": tags})
    assert_error(answer, 412, "has changed since it was read")


def test_counted_clicks_never_make_an_if_match_stale(client: Any, auth: dict[str, str], count_clicks: Any) -> None:
    created = client.post("/admin/campaigns", json=CAMPAIGN, headers=auth)
    path, read = created.headers["Location"], created.headers["ETag"]
    campaign_id = created.get_json()["id"]
    count_clicks([ClickEvent.new(campaign_id, "IPhone", producer=P),
                  ClickEvent.new(campaign_id, "IPhone", producer=P, bot=True),
                  ClickEvent.new(campaign_id, "Android", producer=P, inactive=True)])
    answer = client.put(path, json={"platforms": ["IPhone"]}, headers={**auth, "If-Match": read})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    shown = answer.get_json()
    assert (shown["iphone_click_count"], shown["bot_click_count"], shown["android_inactive_click_count"]) == (1, 1, 1)


def write_after_each_read(monkeypatch: pytest.MonkeyPatch, db: Any, changes: dict[str, Any], times: int) -> None:
    """Make the first ``times`` reads of a conditional edit each followed at once by a real write of ``changes``:
    what the aggregator or another admin would commit between the edit's read and its write."""
    read = CampaignStore._read_for_write
    left = [times]

    def read_then_write(self: CampaignStore, campaign_id: int) -> Any:
        snapshot = read(self, campaign_id)
        if left[0] > 0:
            left[0] -= 1
            campaign_ref(db, campaign_id).update(changes)
        return snapshot

    monkeypatch.setattr(CampaignStore, "_read_for_write", read_then_write)


COUNTED = {f"{COUNTS}.click_count": firestore.Increment(1)}  # as the aggregator adds clicks


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_a_click_counted_between_the_read_and_the_write_is_compared_again_not_refused(
    client: Any, auth: dict[str, str], db: Any, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    created = client.post("/admin/campaigns", json=CAMPAIGN, headers=auth)
    path, read = created.headers["Location"], created.headers["ETag"]
    write_after_each_read(monkeypatch, db, COUNTED, times=2)
    answer = client.open(path, method=method, json={"forward_query": True} if method == "PUT" else None,
                         headers={**auth, "If-Match": read})
    assert answer.status_code == (200 if method == "PUT" else 204), answer.get_data(as_text=True)
    if method == "PUT":
        assert answer.get_json()["forward_query"] is True and answer.get_json()["click_count"] == 2


def test_an_edit_between_the_read_and_the_write_answers_412_and_is_kept(
    client: Any, auth: dict[str, str], db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = client.post("/admin/campaigns", json=CAMPAIGN, headers=auth)
    path, read = created.headers["Location"], created.headers["ETag"]
    write_after_each_read(monkeypatch, db, {"redirect_url": "https://theirs.example/",
                                            "updated_at": datetime.now(timezone.utc)}, times=1)
    answer = client.put(path, json={"redirect_url": "https://mine.example/"}, headers={**auth, "If-Match": read})
    assert_error(answer, 412, "has changed since it was read")
    assert get_json(client, auth, path)["redirect_url"] == "https://theirs.example/"


def test_a_campaign_that_keeps_changing_answers_503_and_is_not_written(
    client: Any, auth: dict[str, str], db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = client.post("/admin/campaigns", json=CAMPAIGN, headers=auth)
    path, read = created.headers["Location"], created.headers["ETag"]
    write_after_each_read(monkeypatch, db, COUNTED, times=10**6)
    answer = client.put(path, json={"redirect_url": "https://mine.example/"}, headers={**auth, "If-Match": read})
    assert_error(answer, 503, "kept changing while it was being written")
    assert answer.headers["Retry-After"] == "1"
    assert get_json(client, auth, path)["redirect_url"] == CAMPAIGN["redirect_url"]


# -- the whole list, streamed ---------------------------------------------------------------------

def many_campaigns(client: Any, auth: dict[str, str], count: int = 40) -> None:
    """More than one streamed chunk of list (64 KiB): each campaign carries a long URL."""
    for n in range(count):
        create(client, auth, {"redirect_url": f"https://e.example/{n}?" + "q" * 2000, "platforms": ["Android"]})


def test_the_whole_list_streams_what_a_page_of_it_holds_byte_for_byte(client: Any, auth: dict[str, str]) -> None:
    many_campaigns(client, auth)
    windows = create(client, auth, {"redirect_url": "https://w.example/", "platforms": ["WindowsPhone"]})
    create(client, auth, {"redirect_url": "https://a.example/", "platforms": ["Android"], "status": "archived"})
    for query in ("", "?format=csv", "?platforms=Android", "?platforms=Android&format=csv",
                  "?status=archived,active&platforms=Android&format=csv"):
        whole = client.get(f"/admin/campaigns{query}", headers=auth)
        page = client.get(f"/admin/campaigns{query}{'&' if query else '?'}limit=1000", headers=auth)
        assert whole.status_code == 200 and "Content-Length" not in whole.headers  # sent as it was made
        expected = (page.get_data() if "csv" in query else
                    json.dumps(page.get_json()["campaigns"], separators=(",", ":")).encode())
        assert whole.get_data() == expected and len(expected) > 64 * 1024, query
        assert (b"https://a.example/" in expected) == ("status" in query), query  # archived: listed when asked
    # A list that fits in one chunk goes whole, with its length.
    small = client.get("/admin/campaigns?platforms=WindowsPhone", headers=auth)
    assert small.headers["Content-Length"] == str(len(small.get_data()))
    assert small.get_data() == json.dumps([windows], separators=(",", ":")).encode()
    assert client.get("/admin/campaigns?platforms=IPhone", headers=auth).get_data() == b"[]"


def broken_campaign(db: Any, campaign_id: int, created_at: datetime) -> None:
    """A campaign document without its redirect_url, as no write of the admin leaves one: reading it fails."""
    document = new_campaign_document({"redirect_url": "https://e.example/", "platforms": ["Android"]}, created_at)
    del document["redirect_url"]
    campaign_ref(db, campaign_id).set(document)


@pytest.mark.parametrize("query", ["", "?format=csv"])
def test_a_failure_before_the_list_begins_answers_json_and_after_it_cuts_the_answer_short(
    client: Any, auth: dict[str, str], db: Any, caplog: pytest.LogCaptureFixture, query: str
) -> None:
    many_campaigns(client, auth)
    broken_campaign(db, 1, datetime(2020, 1, 1, tzinfo=timezone.utc))  # the oldest: listed last
    answer = client.get(f"/admin/campaigns{query}", headers=auth)
    assert answer.status_code == 200
    with pytest.raises(KeyError, match="redirect_url"):
        answer.get_data()  # its server gets the error, and cuts the connection
    assert [r.levelname for r in caplog.records if r.getMessage().startswith("answer cut short")] == ["ERROR"]
    broken_campaign(db, 2, datetime.now(timezone.utc))  # the newest: read before the answer begins
    answer = client.get(f"/admin/campaigns{query}", headers=auth)
    assert answer.status_code == 500 and answer.get_json() == {"status": "error", "msg": "Internal server error."}
