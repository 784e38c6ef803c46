from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from shared.errors import BadRequest
from shared.models import Campaign, parse_campaign_fields, parse_campaign_id, rfc3339, validate_url
from shared.platforms import COUNTER_FIELDS


@pytest.mark.parametrize("url", [
    "https://github.com/otobrglez/o7tracker",
    "http://example.com",
    "HTTPS://Example.com:8443/a?b=c#d",
    "https://play.google.com/store/apps/details?id=com.outfit7.talkingtom",
])
def test_valid_urls_are_kept_as_given(url: str) -> None:
    assert validate_url(url, "redirect_url") == url


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "data:text/html,hi", "/relative/path", "example.com", "https://",
    "http:///nohost", "ftp://example.com/file", "https://exa mple.com", "https://example.com/\n",
    "https://example.com:99999/", "", None, 42, ["https://example.com"], "https://e.com/" + "a" * 2048,
])
def test_invalid_urls_are_refused(url: object) -> None:
    with pytest.raises(BadRequest):
        validate_url(url, "redirect_url")


@pytest.mark.parametrize("url", [
    "https://user:pw@evil.example/", "https://user@evil.example/", "http://@evil.example/",
    "https://good.example@evil.example/", "https://good.example\\@evil.example/", "HTTPS://a:b@e.com:8443/",
])
def test_urls_with_user_info_are_refused(url: str) -> None:
    with pytest.raises(BadRequest, match="must not contain user info"):
        validate_url(url, "redirect_url")


def test_an_at_sign_after_the_host_is_fine() -> None:
    for url in ("https://e.com/@handle", "https://e.com/?mail=a@b.example", "https://e.com/#@x"):
        assert validate_url(url, "redirect_url") == url


def test_create_needs_url_and_platforms() -> None:
    with pytest.raises(BadRequest, match="missing field"):
        parse_campaign_fields({"redirect_url": "https://e.com"}, partial=False)
    with pytest.raises(BadRequest, match="missing field"):
        parse_campaign_fields({"platforms": ["Android"]}, partial=False)


def test_platforms_are_validated_case_sensitively_and_deduplicated() -> None:
    body = {"redirect_url": "https://e.com", "platforms": ["IPhone", "Android", "IPhone"]}
    assert parse_campaign_fields(body, partial=False)["platforms"] == ["IPhone", "Android"]
    for platforms in ([], ["android"], ["BlackBerry"], "Android", [1], None):
        with pytest.raises(BadRequest):
            parse_campaign_fields({"redirect_url": "https://e.com", "platforms": platforms}, partial=False)


def test_update_ignores_read_only_fields_and_refuses_unknown_ones() -> None:
    body = {"id": 5, "click_count": 99, "created_at": "x", "platforms": ["Android"]}
    assert parse_campaign_fields(body, partial=True) == {"platforms": ["Android"]}
    with pytest.raises(BadRequest, match="unknown field"):
        parse_campaign_fields({"redirect_urll": "https://e.com"}, partial=True)
    with pytest.raises(BadRequest, match="nothing to update"):
        parse_campaign_fields({"click_count": 3}, partial=True)
    with pytest.raises(BadRequest, match="JSON object"):
        parse_campaign_fields(["https://e.com"], partial=True)


def test_platform_urls_are_validated_like_redirect_url() -> None:
    body = {"platform_urls": {"Android": "https://play.google.com/x"}}
    assert parse_campaign_fields(body, partial=True) == body
    for bad in ({"Android": "javascript:x"}, {"Symbian": "https://e.com"}, ["https://e.com"]):
        with pytest.raises(BadRequest):
            parse_campaign_fields({"platform_urls": bad}, partial=True)


@pytest.mark.parametrize("raw, expected", [
    ("1", 1), ("5928566696968192", 5928566696968192), (str(2**53 - 1), 2**53 - 1),
    (str(2**53), None), ("0", None), ("-1", None), ("abc", None), ("", None), (None, None),
    ("١٢", None), ("1e3", None), ("12345678901234567890", None),
])
def test_campaign_ids_are_positive_and_javascript_safe(raw: str | None, expected: int | None) -> None:
    assert parse_campaign_id(raw) == expected


def test_json_has_the_original_fields() -> None:
    moment = datetime(2016, 4, 10, 21, 47, 44, 519184, tzinfo=timezone.utc)
    body = Campaign(7, "https://e.com", ["Android"], moment, moment).to_json()
    assert body["created_at"] == "2016-04-10T21:47:44.519184Z" == rfc3339(moment)
    for field in ("id", "redirect_url", "updated_at", "platforms", "click_count", "android_click_count",
                  "iphone_click_count", "windowsphone_click_count"):
        assert field in body
    assert body["click_count"] == 0


def test_lifecycle_fields_are_optional_and_null_unsets_them() -> None:
    body = {"status": "paused", "starts_at": "2026-06-01T09:00:00+02:00", "ends_at": "2026-07-01t00:00:00.5z",
            "max_clicks": 1000, "fallback_url": "https://e.com/over"}
    assert parse_campaign_fields(body, partial=True) == {
        "status": "paused", "starts_at": datetime(2026, 6, 1, 7, tzinfo=timezone.utc),
        "ends_at": datetime(2026, 7, 1, 0, 0, 0, 500000, tzinfo=timezone.utc), "max_clicks": 1000,
        "fallback_url": "https://e.com/over"}
    unset = {"starts_at": None, "ends_at": None, "max_clicks": None, "fallback_url": None}
    assert parse_campaign_fields(unset, partial=True) == unset


@pytest.mark.parametrize("field, value, message", [
    ("status", "stopped", "'status' must be one of active, paused, archived"),
    ("status", None, "'status' must be one of"),
    ("status", ["active"], "'status' must be one of"),
    ("starts_at", "2026-06-01", "'starts_at' must be an RFC 3339 date-time with an offset"),
    ("starts_at", "2026-06-01T09:00:00", "'starts_at' must be an RFC 3339 date-time with an offset"),
    ("starts_at", "2026-06-01 09:00:00Z", "'starts_at' must be an RFC 3339"),
    ("ends_at", "2026-02-30T00:00:00Z", "'ends_at' is not a date-time that exists"),
    ("ends_at", "0001-01-01T00:00:00+01:00", "'ends_at' is not a date-time that exists"),  # before year 1 in UTC
    ("ends_at", 1780000000, "'ends_at' must be an RFC 3339"),
    ("max_clicks", 0, "'max_clicks' must be a whole number from 1 to 9007199254740991, or null"),
    ("max_clicks", True, "'max_clicks' must be a whole number"),
    ("max_clicks", 2.0, "'max_clicks' must be a whole number"),
    ("max_clicks", "10", "'max_clicks' must be a whole number"),
    ("max_clicks", 2**53, "'max_clicks' must be a whole number"),
    ("fallback_url", "javascript:alert(1)", "'fallback_url' must be an absolute http or https URL"),
    ("fallback_url", "https://u:p@e.com/", "'fallback_url' must not contain user info"),
    ("fallback_url", "", "'fallback_url' must be a non-empty string"),
])
def test_bad_lifecycle_fields_answer_a_400_naming_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_campaign_fields({field: value}, partial=True)
    assert message in raised.value.msg


def test_ends_at_must_come_after_starts_at() -> None:
    for ends_at in ("2026-06-01T09:00:00Z", "2026-06-01T11:00:00+02:00", "2026-05-31T00:00:00Z"):
        with pytest.raises(BadRequest, match="'ends_at' must be after 'starts_at' \\(2026-06-01T09:00:00.000000Z\\)"):
            parse_campaign_fields({"starts_at": "2026-06-01T09:00:00Z", "ends_at": ends_at}, partial=True)
    assert parse_campaign_fields({"starts_at": "2026-06-01T09:00:00Z", "ends_at": "2026-06-01T09:00:01Z"},
                                 partial=True)


def test_the_json_shows_every_lifecycle_field_null_when_unset() -> None:
    moment = datetime(2016, 4, 10, 21, 47, 44, 519184, tzinfo=timezone.utc)
    body = Campaign(7, "https://e.com", ["Android"], moment, moment).to_json()
    assert {k: body[k] for k in ("status", "starts_at", "ends_at", "max_clicks", "fallback_url")} == {
        "status": "active", "starts_at": None, "ends_at": None, "max_clicks": None, "fallback_url": None}
    dated = Campaign(7, "https://e.com", ["Android"], moment, moment, starts_at=moment, ends_at=moment).to_json()
    assert dated["starts_at"] == dated["ends_at"] == "2016-04-10T21:47:44.519184Z"
    assert body["inactive_click_count"] == body["android_inactive_click_count"] == 0


def test_a_campaign_version_changes_with_every_field_written_and_never_with_the_counted_ones() -> None:
    moment = datetime(2026, 6, 1, tzinfo=timezone.utc)
    read = Campaign(7, "https://e.com", ["Android"], moment, moment)
    counted = replace(read, counters=dict.fromkeys(COUNTER_FIELDS, 3), as_of=moment)
    assert counted.version == read.version
    for field in COUNTER_FIELDS:  # the inactive counters too: only the aggregator changes any of them
        assert replace(read, counters={field: 1}).version == read.version, field
    written = {"redirect_url": "https://f.com", "platforms": ["IPhone"], "updated_at": moment + timedelta(seconds=1),
               "platform_urls": {"Android": "https://a.com"}, "forward_query": True, "status": "paused",
               "starts_at": moment, "ends_at": moment, "max_clicks": 5, "fallback_url": "https://f.com/over"}
    for field, value in written.items():
        assert replace(read, **{field: value}).version != read.version, field
