"""The admin function through functions-framework's test client, over the Firestore emulator."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from conftest import function_app

CAMPAIGN = {
    "redirect_url": "https://github.com/otobrglez/o7tracker",
    "platforms": ["WindowsPhone", "Android", "IPhone"],
}


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


def test_unknown_and_malformed_ids_answer_404(client: Any, auth: dict[str, str]) -> None:
    for path in ("/admin/campaigns/123", "/admin/campaigns/abc", "/admin/campaigns/-1",
                 f"/admin/campaigns/{2**53}"):
        assert_error(client.get(path, headers=auth), 404, "not found")
    assert_error(client.put("/admin/campaigns/123", headers=auth, json={"platforms": ["Android"]}), 404, "not found")


def test_wrong_methods_answer_405(client: Any, auth: dict[str, str]) -> None:
    assert_error(client.patch("/admin/campaigns", headers=auth), 405, "not allowed")
    assert_error(client.post("/admin/campaigns/1", headers=auth, json=CAMPAIGN), 405, "not allowed")


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
