"""A campaign's ``forward_query``: the click's query parameters carried on to its destination.

The merge works on the encoded pairs as they came and never decodes a value, so every value
reaches the destination byte for byte (``+``, ``%2B``, ``%20``, repeated keys, ``gclid``,
``fbclid``, ``ttclid``); a value decoded and encoded again could come back different (``+`` for a
space, say). Keys alone are decoded, as the destination will decode them, to compare them: the
tracker's own ``platform`` stays behind, and so does any key the destination already has, so a
click cannot change a campaign's ``utm_campaign``. The click's pairs follow the destination's own
query, before its fragment; scheme, host and path are never touched.
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes, unquote_plus

TRACKER_PARAMETER = "platform"
# What a query keeps as it came: printable ASCII but "#", which would start a fragment. Anything
# else (raw UTF-8 bytes a client sent unencoded, say) is percent-encoded, byte for byte.
_KEPT = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "#")


def merge_click_query(destination: str, click_query: bytes) -> str:
    """``destination`` with the click's query parameters added, but ``platform`` and those it has."""
    head, hash_sign, fragment = destination.partition("#")
    base, _, own_query = head.partition("?")
    own_keys = {_key(pair) for pair in own_query.split("&") if pair}
    forwarded = [
        pair for pair in quote_from_bytes(click_query, _KEPT).split("&")
        if pair and (key := _key(pair)) != TRACKER_PARAMETER and key not in own_keys
    ]
    if not forwarded:
        return destination
    query = "&".join([own_query, *forwarded] if own_query else forwarded)
    return f"{base}?{query}{hash_sign}{fragment}"


def _key(pair: str) -> str:
    """A pair's key as a form decoder reads it, so ``utm%5Fcampaign`` is ``utm_campaign``."""
    return unquote_plus(pair.partition("=")[0])
