"""Shared fixtures: the emulators, a clean Firestore, unique Pub/Sub names, function apps.

``./test.sh`` starts the emulators and sets their variables; when pytest is run
directly instead, the first test that needs them starts a pair for the session.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for function_dir in sorted((ROOT / "functions").iterdir()):
    sys.path.insert(0, str(function_dir))  # each function's modules have unique names
sys.path.insert(0, str(ROOT))

from local import emulators  # noqa: E402


@pytest.fixture(scope="session")
def emulator_env() -> Iterator[dict[str, str]]:
    names = ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")
    if all(os.environ.get(name) for name in names):
        yield {name: os.environ[name] for name in names}
        return
    with emulators.running() as env:
        os.environ.update(env)
        yield env


@pytest.fixture
def project(emulator_env: dict[str, str]) -> str:
    return emulator_env["GOOGLE_CLOUD_PROJECT"]


@pytest.fixture
def db(emulator_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """A Firestore client over an emptied emulator database."""
    from google.cloud import firestore

    emulators.wipe_firestore(emulator_env["FIRESTORE_EMULATOR_HOST"], emulator_env["GOOGLE_CLOUD_PROJECT"])
    return firestore.Client(project=emulator_env["GOOGLE_CLOUD_PROJECT"])


@pytest.fixture
def pubsub_names(project: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A fresh topic and pull subscription (the emulator has no reset), set in the environment."""
    suffix = uuid.uuid4().hex[:12]
    topic, subscription = f"clicks-{suffix}", f"clicks-agg-{suffix}"
    emulators.create_topic_and_subscription(project, topic, subscription)
    monkeypatch.setenv("CLICKS_TOPIC", topic)
    monkeypatch.setenv("CLICKS_SUBSCRIPTION", subscription)
    return topic, subscription


@pytest.fixture(autouse=True)
def campaign_id_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The admin and track functions refuse to start without one, as deployed."""
    key = "test-campaign-id-key-" + uuid.uuid4().hex
    monkeypatch.setenv("CAMPAIGN_ID_KEY", key)
    return key


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setenv("AUTH_USER", "admin")
    monkeypatch.setenv("AUTH_PASSWORD", "s3cret-Pass")
    return "admin", "s3cret-Pass"


def function_app(name: str, target: str):  # type: ignore[no-untyped-def]
    """A function's app built the way Cloud Functions builds it: from its main.py, by path."""
    import functions_framework

    return functions_framework.create_app(target, str(ROOT / "functions" / name / "main.py"))
