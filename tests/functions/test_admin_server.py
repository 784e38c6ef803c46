"""The admin function served as Cloud Run serves it: ``functions-framework --target admin`` (gunicorn).

What a client sees of an answer that fails while it streams is only visible through a real server.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from test_track_server import start_server

from shared.store import campaign_ref, new_campaign_document

AUTH = ("admin", "server-test-Pass")


def test_a_list_that_fails_after_it_began_ends_short_and_no_client_takes_it_for_whole(db: Any, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    batch = db.batch()
    for n in range(60):  # several 64 KiB chunks of list before the failure
        values = {"redirect_url": f"https://e.example/{n}?" + "q" * 2000, "platforms": ["Android"]}
        batch.set(campaign_ref(db, 1_000_000 + n), new_campaign_document(values, now - timedelta(seconds=n)))
    # The oldest, so listed last: a document no write of the admin leaves, without its redirect_url.
    broken = new_campaign_document({"redirect_url": "https://e.example/", "platforms": ["Android"]},
                                   now - timedelta(days=1))
    del broken["redirect_url"]
    batch.set(campaign_ref(db, 1), broken)
    batch.commit()
    server = start_server({"AUTH_USER": AUTH[0], "AUTH_PASSWORD": AUTH[1]}, tmp_path / "admin.log", function="admin")
    try:
        for query in ("", "?format=csv"):
            with pytest.raises(requests.exceptions.ChunkedEncodingError):  # no final chunk: cut before the end
                requests.get(f"http://127.0.0.1:{server.port}/campaigns{query}", auth=AUTH, timeout=30)
        assert requests.get(f"http://127.0.0.1:{server.port}/campaigns?platforms=IPhone", auth=AUTH,
                            timeout=30).json() == []
    finally:
        server.stop()
    cut = [line for line in server.log() if line["message"] == "answer cut short: it failed after it had begun"]
    assert [line["severity"] for line in cut] == ["ERROR", "ERROR"]
