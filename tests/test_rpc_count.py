"""The benchmark's wire counter of gRPC calls (bench.rpc_count), against the Firestore emulator."""

from __future__ import annotations

from typing import Any

import pytest

from bench.rpc_count import PREFACE_BYTES, CallCounter, CountingProxy


def frame(kind: int, payload: bytes, stream: int = 1) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, 0]) + stream.to_bytes(4, "big") + payload


def test_only_headers_frames_count_however_the_bytes_are_split() -> None:
    # SETTINGS, two calls (HEADERS with a payload holding 0x01 bytes, DATA), a PING, a WINDOW_UPDATE
    stream = (b"P" * PREFACE_BYTES + frame(0x4, b"") + frame(0x1, b"\x01" * 20) + frame(0x0, b"\x01" * 300)
              + frame(0x1, b"\x01\x01", stream=3) + frame(0x0, b"", stream=3) + frame(0x6, b"\x00" * 8)
              + frame(0x8, b"\x00\x00\x00\x01"))
    for piece in (len(stream), 7, 1):
        counter = CallCounter()
        for start in range(0, len(stream), piece):
            counter.feed(stream[start:start + piece])
        assert counter.calls == 2


def test_the_proxy_counts_one_call_per_document_read(
    db: Any, emulator_env: dict[str, str], project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud import firestore

    db.collection("things").document("a").set({"n": 1})
    proxy = CountingProxy(emulator_env["FIRESTORE_EMULATOR_HOST"])
    try:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", proxy.host)
        things = firestore.Client(project=project).collection("things")
        assert things.document("a").get().get("n") == 1
        assert not things.document("b").get().exists
        assert things.document("a").get().exists
        assert proxy.calls == 3
    finally:
        proxy.close()
