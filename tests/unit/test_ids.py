import random

import pytest

from shared import config
from shared.ids import SERIAL_BITS, TAG_BITS, CampaignIds, in_registry, keyed_ids
from shared.models import MAX_CAMPAIGN_ID

KEY = b"unit-test-campaign-id-key"


def test_issued_ids_are_distinct_positive_53_bit_integers_that_verify() -> None:
    ids = CampaignIds(KEY)
    issued = {ids.issue() for _ in range(10_000)}
    # 29 random bits: two of 10,000 draws coincide with chance 9% (the store then draws again).
    assert len(issued) >= 9_990
    assert all(0 < i <= MAX_CAMPAIGN_ID and ids.verify(i) for i in issued)
    assert max(issued).bit_length() == 53  # the serial's random bits reach the top
    assert TAG_BITS + SERIAL_BITS == 53


def test_ids_made_up_without_the_key_almost_never_pass() -> None:
    ids = CampaignIds(KEY)
    made_up = random.sample(range(1, MAX_CAMPAIGN_ID + 1), 200_000)
    assert sum(map(ids.verify, made_up)) <= 2  # 2^-24 each: 0.012 expected
    other_key = CampaignIds(b"another-key-altogether")
    assert sum(other_key.verify(ids.issue()) for _ in range(10_000)) <= 1


def test_changing_any_bit_of_an_issued_id_fails_the_check() -> None:
    ids = CampaignIds(KEY)
    issued = ids.issue()
    assert not any(ids.verify(issued ^ (1 << bit)) for bit in range(53))


@pytest.mark.parametrize("campaign_id", [0, 1, (1 << TAG_BITS) - 1, MAX_CAMPAIGN_ID + 1, 2**64])
def test_ids_outside_the_serial_range_fail(campaign_id: int) -> None:
    assert not CampaignIds(KEY).verify(campaign_id)


def test_an_id_that_fails_the_check_may_exist_only_in_the_registry_or_without_one() -> None:
    ids = CampaignIds(KEY)
    legacy, never = 5928566696968192, 424242
    assert not ids.verify(legacy) and not ids.verify(never)
    assert in_registry(legacy, None) and in_registry(never, None)  # without a registry, each is looked up
    registry = frozenset({legacy})
    assert in_registry(legacy, registry)
    assert not in_registry(never, registry) and not in_registry(never, frozenset())


def test_the_key_comes_from_its_setting_and_must_be_long_enough() -> None:
    settings = config.load(config.CAMPAIGN_ID_KEY, env={config.CAMPAIGN_ID_KEY: KEY.decode()})
    assert keyed_ids(settings).verify(CampaignIds(KEY).issue())
    with pytest.raises(config.ConfigError, match="CAMPAIGN_ID_KEY"):
        config.load(config.CAMPAIGN_ID_KEY, env={})
    with pytest.raises(config.ConfigError, match="CAMPAIGN_ID_KEY must be at least 16 characters"):
        config.load(config.CAMPAIGN_ID_KEY, env={config.CAMPAIGN_ID_KEY: "short"})
    with pytest.raises(config.ConfigError, match="CAMPAIGN_ID_KEY"):
        keyed_ids(config.Settings())
