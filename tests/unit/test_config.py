import pytest

from shared import config


def test_defaults_match_the_original() -> None:
    settings = config.Settings.from_env({})
    assert settings.fallback_url == "http://outfit7.com"
    assert settings.auth_user == "admin"
    assert settings.auth_password is None


def test_values_come_from_the_named_variables() -> None:
    settings = config.Settings.from_env({
        config.PROJECT: "p", config.CACHE_TTL_SECONDS: "2.5", config.CACHE_MAX_SIZE: "10",
        config.FALLBACK_URL: "https://fallback.example/", config.AUTH_PASSWORD: "pw",
    })
    assert (settings.project, settings.cache_ttl_seconds, settings.cache_max_size) == ("p", 2.5, 10)
    assert settings.fallback_url == "https://fallback.example/" and settings.auth_password == "pw"


def test_a_missing_required_setting_names_its_variable() -> None:
    with pytest.raises(config.ConfigError, match="AUTH_PASSWORD"):
        config.load(config.AUTH_PASSWORD, env={config.AUTH_PASSWORD: ""})
    with pytest.raises(config.ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        config.load(config.PROJECT, env={})


@pytest.mark.parametrize("raw", ["ten", "-1", "0"])
def test_malformed_numbers_fail_at_load(raw: str) -> None:
    with pytest.raises(config.ConfigError, match="CACHE_MAX_SIZE"):
        config.Settings.from_env({config.CACHE_MAX_SIZE: raw})
