"""Campaign ids that carry a keyed check, so that an id never issued costs no lookup.

An id is ``(serial << TAG_BITS) | tag``: ``serial`` is ``SERIAL_BITS`` random
bits (never all zero) and ``tag`` the first ``TAG_BITS`` bits of
HMAC-SHA256(``CAMPAIGN_ID_KEY``, serial as 8 big-endian bytes). Ids stay
positive integers up to 2^53-1, so links and JSON keep their shape and
JavaScript clients keep them exact.

The numbers, with 24 tag bits and 29 serial bits:

* an id made up without the key passes the check with chance 2^-24, one in
  16.8 million: a flood of random ids at 10,000 requests a second lets one
  through to a Firestore read about every half hour (and that one is then
  negatively cached);
* 2^29-1, about 537 million, ids remain: with a million campaigns a new draw
  collides with one in 0.2% of cases, and the store draws again.

Knowing the key is what issuing takes, so it is a secret; changing it turns
every keyed id issued before into one that fails the check, so it never
changes. Ids issued before ids were keyed pass only by chance: they are kept
in a registry (:mod:`shared.legacy_ids`), which :func:`in_registry` reads.
"""

from __future__ import annotations

import hmac
import secrets

from shared.config import CAMPAIGN_ID_KEY, ConfigError, Settings

TAG_BITS = 24
SERIAL_BITS = 53 - TAG_BITS
_TAG_MASK = (1 << TAG_BITS) - 1
_SERIAL_LIMIT = 1 << SERIAL_BITS


class CampaignIds:
    """Issues and verifies campaign ids under one key."""

    def __init__(self, key: bytes) -> None:
        # The key's own HMAC state, copied per id: half the cost of starting afresh.
        self._mac = hmac.new(key, digestmod="sha256")

    def issue(self) -> int:
        """A fresh random id that passes :meth:`verify`."""
        serial = secrets.randbelow(_SERIAL_LIMIT - 1) + 1
        return (serial << TAG_BITS) | self._tag(serial)

    def verify(self, campaign_id: int) -> bool:
        """Whether the id was issued under this key (or is one of the rare ids that pass by chance)."""
        serial = campaign_id >> TAG_BITS
        return 0 < serial < _SERIAL_LIMIT and campaign_id & _TAG_MASK == self._tag(serial)

    def _tag(self, serial: int) -> int:
        mac = self._mac.copy()
        mac.update(serial.to_bytes(8, "big"))
        return int.from_bytes(mac.digest()[:4], "big") >> (32 - TAG_BITS)


def keyed_ids(settings: Settings) -> CampaignIds:
    if not settings.campaign_id_key:
        raise ConfigError(f"missing required setting: {CAMPAIGN_ID_KEY}")
    return CampaignIds(settings.campaign_id_key.encode())


def in_registry(campaign_id: int, legacy: frozenset[int] | None) -> bool:
    """Whether an id that fails the keyed check may still name a campaign: one issued before ids were keyed.

    ``legacy`` holds those ids; ``None`` means no registry of them was found,
    so any id might be one and each is looked up.
    """
    return legacy is None or campaign_id in legacy
