import subprocess
import sys
from pathlib import Path

import pytest

from shared import config

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(("name", "raw"), [("CACHE_TTL_SECONDS", "nan"), ("CACHE_TTL_SECONDS", "inf"),
                                           ("CACHE_MAX_SIZE", "2.5")])
def test_numbers_must_be_finite_and_of_their_type(name: str, raw: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        config.Settings.from_env({name: raw})


def test_every_setting_is_declared_with_a_meaning_and_its_functions() -> None:
    """A field added without setting(...) would be missing from the README and deploy.sh's checks."""
    functions = {path.name for path in (ROOT / "functions").iterdir() if (path / "main.py").is_file()}
    names = [item.name for item in config.SETTINGS]
    assert len(names) == len(set(names))
    for item in config.SETTINGS:
        assert item.description and "|" not in item.description, f"{item.attribute}: declare it with setting(...)"
        assert item.used_by and set(item.used_by) <= functions, item.name
        assert getattr(config, item.name.removeprefix("GOOGLE_CLOUD_"), None) == item.name, (
            f"{item.name}: no name constant in shared/config.py"
        )
        assert getattr(config.Settings(), item.attribute) == item.default


def test_every_setting_is_read_from_its_variable() -> None:
    env = {item.name: str(item.default or 7) if item.type is not str else f"set-{item.name}"
           for item in config.SETTINGS}
    settings = config.Settings.from_env(env)
    for item in config.SETTINGS:
        assert str(getattr(settings, item.attribute)) == str(item.type(env[item.name])), item.name


def test_the_readme_table_is_the_generated_one() -> None:
    table = config.readme_table((ROOT / "README.md").read_text())
    assert table is not None, "README.md lost its settings table markers"
    assert table == config.markdown_table(), "stale settings table: run python -m shared.config --update-readme"


def test_the_command_line_prints_the_table_and_defaults() -> None:
    def run(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "shared.config", *args], cwd=ROOT, capture_output=True,
                              text=True, check=True, timeout=30).stdout

    assert run("--markdown") == config.markdown_table()
    assert run("--default", config.LOOKUP_TIMEOUT_SECONDS) == "1.5\n"
    assert run("--default", config.FALLBACK_URL) == "http://outfit7.com\n"
    assert run("--default", config.PROJECT) == "\n"
