"""Resident memory of a track instance with its campaign cache full.

``python -m bench.cache_memory [--campaigns 100000]`` imports the track
function as an instance would (clients, user-agent rules and all), fills its
RouteCache with realistic campaigns, and prints the process's RSS before and
after, and the cost per cached campaign. No emulator is needed: the loader
hands out campaigns as Firestore would, so only the cache's memory is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "functions" / "track")]  # the function's modules import by name

from classify import compile_bot_pattern  # noqa: E402
from google.cloud import firestore  # noqa: E402
from google.pubsub_v1 import PublisherAsyncClient  # noqa: E402
from route_cache import RouteCache  # noqa: E402
from tracking import build_tracker  # noqa: E402

from shared.config import Settings  # noqa: E402
from shared.legacy_ids import LegacyIds  # noqa: E402
from shared.models import Route  # noqa: E402
from shared.platforms import PLATFORMS  # noqa: E402
from shared.store import route_from_document  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def campaign(campaign_id: int) -> Route:
    """A typical campaign as Firestore returns it: a tagged landing page, two or three
    platforms, and a store link on half of them."""
    document = {
        "redirect_url": f"https://landing.example.com/campaigns/{campaign_id}?utm_source=o7&utm_medium=cpc",
        "platforms": list(PLATFORMS[: 2 + campaign_id % 2]),
        "platform_urls": {"Android": f"https://play.google.com/store/apps/details?id=com.example.app{campaign_id}"}
        if campaign_id % 2 else {},
    }
    return route_from_document(document)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--campaigns", type=int, default=100_000)
    asyncio.run(measure(parser.parse_args().campaigns))


async def measure(campaigns: int) -> None:
    # The clients are built as on a real instance but never called: pointing
    # them at an emulator address spares them a search for credentials.
    for variable in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"):
        os.environ.setdefault(variable, "127.0.0.1:9")
    settings = Settings(project="demo-o7tracker", cache_max_size=campaigns, campaign_id_key="cache-memory-bench-key")
    db = firestore.AsyncClient(project=settings.project)
    tracker = build_tracker(settings, LegacyIds(db), db, PublisherAsyncClient())
    compile_bot_pattern()  # as an instance's start does
    gc.collect()
    before = rss_mib()
    tracker.routes = RouteCache(campaign, maxsize=campaigns, ttl=3600, negative_ttl=5, timeout=1)
    for campaign_id in range(1, campaigns + 1):
        await tracker.routes.get(campaign_id)
    gc.collect()
    after = rss_mib()
    per_campaign = (after - before) * 1024 * 1024 / campaigns
    print(f"track instance RSS: {before:.1f} MiB with an empty cache, {after:.1f} MiB with "
          f"{len(tracker.routes):,} campaigns cached ({per_campaign:.0f} bytes per campaign)")


if __name__ == "__main__":
    main()
