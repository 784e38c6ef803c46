"""The query merge of campaigns with forward_query: each encoding case, byte for byte."""

from urllib.parse import parse_qsl, urlsplit

import pytest
from forwarding import merge_click_query

LANDING = "https://shop.example/spring?utm_source=o7&utm_campaign=spring"


@pytest.mark.parametrize("click_query, forwarded", [
    # spaces both ways, a literal plus encoded, and a plus that means a space, as they came
    (b"q=red%20shoes&r=a+b&s=1%2B1", "q=red%20shoes&r=a+b&s=1%2B1"),
    (b"tag=a&tag=b&tag=a", "tag=a&tag=b&tag=a"),  # repeated keys, in order
    (b"q=%C3%BC%E2%82%AC", "q=%C3%BC%E2%82%AC"),  # percent-encoded UTF-8
    (b"q=\xc3\xbc&r=\xfc", "q=%C3%BC&r=%FC"),  # raw bytes, encoded one by one: no decoding guess
    (b"gclid=Cj0KCQ-abc_DEF&fbclid=IwAR1x~y.z&ttclid=E.C.P.aBc-12", "gclid=Cj0KCQ-abc_DEF&fbclid=IwAR1x~y.z"
     "&ttclid=E.C.P.aBc-12"),
    (b"flag&empty=&a==b", "flag&empty=&a==b"),  # no value, an empty one, "=" in a value
    (b"a=1&&b=2&", "a=1&b=2"),  # empty pairs carry nothing
    (b"next=%2F%2Fevil.example%2F&at=%40evil.example&h=%23x", "next=%2F%2Fevil.example%2F&at=%40evil.example"
     "&h=%23x"),
])
def test_the_clicks_pairs_follow_the_destinations_own_unchanged(click_query: bytes, forwarded: str) -> None:
    assert merge_click_query(LANDING, click_query) == f"{LANDING}&{forwarded}"


def test_platform_stays_behind_however_it_is_spelt() -> None:
    for click_query in (b"platform=Android", b"platform=Android&platform=IPhone", b"plat%66orm=Android"):
        assert merge_click_query(LANDING, click_query + b"&gclid=x") == f"{LANDING}&gclid=x"
    assert merge_click_query(LANDING, b"Platform=x") == f"{LANDING}&Platform=x"  # keys are case-sensitive


def test_the_destinations_own_parameters_win_a_clash() -> None:
    merged = merge_click_query(LANDING, b"utm_campaign=evil&utm%5Fcampaign=evil&utm_source=x&utm_medium=cpc")
    assert merged == f"{LANDING}&utm_medium=cpc"
    assert parse_qsl(urlsplit(merged).query) == [("utm_source", "o7"), ("utm_campaign", "spring"),
                                                  ("utm_medium", "cpc")]
    # a key the destination has without a value still counts as its own
    assert merge_click_query("https://e.example/?flag", b"flag=1&x=2") == "https://e.example/?flag&x=2"


@pytest.mark.parametrize("destination, merged", [
    ("https://e.example/p#top", "https://e.example/p?gclid=x#top"),
    ("https://e.example/p?a=1#top", "https://e.example/p?a=1&gclid=x#top"),
    ("https://e.example/#/route?view=2", "https://e.example/?gclid=x#/route?view=2"),  # a fragment's "?" is its own
    ("https://e.example", "https://e.example?gclid=x"),
    ("https://e.example/?", "https://e.example/?gclid=x"),
    ("https://e.example/ü?q=ä", "https://e.example/ü?q=ä&gclid=x"),  # the destination as stored
])
def test_the_fragment_stays_after_the_query(destination: str, merged: str) -> None:
    assert merge_click_query(destination, b"platform=IPhone&gclid=x") == merged


def test_the_destinations_host_never_changes() -> None:
    for click_query in (b"x=@evil.example", b"@evil.example/", b"//evil.example", b"x=1#@evil.example",
                        b"%2F%2Fevil.example", b"\\\\evil.example", b"x=\x00\r\nLocation:%20//evil.example"):
        merged = merge_click_query("https://shop.example/p#frag", click_query)
        parts = urlsplit(merged)
        assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == ("https", "shop.example", "/p", "frag")
        assert merged.isascii() and merged.isprintable(), merged  # nothing a header could split on


def test_nothing_to_forward_leaves_the_destination_as_it_is() -> None:
    for click_query in (b"", b"platform=Android", b"utm_source=x", b"&&"):
        assert merge_click_query(LANDING + "#x", click_query) == LANDING + "#x"
