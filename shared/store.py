"""Campaigns in Firestore: the document layout and the admin's reads and writes.

Layout::

    campaigns/{id}                           the campaign as the admin wrote it
    campaigns/{id}/counter_shards/{k}        click totals, spread over k shards
    campaigns/{id}/hourly/{YYYYMMDDHH}-{k}   per-platform counts per UTC hour, sharded alike
    clicks/{click_id}                        dedup record of a counted click, expires by TTL

Counters live apart from the campaign so that counting never rewrites the
campaign, and are sharded so that a hot campaign spreads its writes.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.errors import NotFound
from shared.models import MAX_CAMPAIGN_ID, Campaign, Counters, Route, zero_counters
from shared.platforms import COUNTER_FIELDS

CAMPAIGNS = "campaigns"
COUNTER_SHARDS = "counter_shards"
HOURLY = "hourly"
CLICKS = "clicks"

_CREATE_ATTEMPTS = 5


def campaign_ref(db: firestore.Client, campaign_id: int) -> firestore.DocumentReference:
    return db.collection(CAMPAIGNS).document(str(campaign_id))


def shard_ref(db: firestore.Client, campaign_id: int, shard: int) -> firestore.DocumentReference:
    return db.document(CAMPAIGNS, str(campaign_id), COUNTER_SHARDS, str(shard))


def hourly_ref(db: firestore.Client, campaign_id: int, hour: datetime, shard: int) -> firestore.DocumentReference:
    return db.document(CAMPAIGNS, str(campaign_id), HOURLY, f"{hour:%Y%m%d%H}-{shard}")


def click_ref(db: firestore.Client, click_id: str) -> firestore.DocumentReference:
    return db.collection(CLICKS).document(click_id)


@functools.cache
def _platform_set(platforms: tuple[str, ...]) -> frozenset[str]:
    """One shared set per combination: a full track cache holds 100,000 routes but a handful of these."""
    return frozenset(platforms)


_NO_PLATFORM_URLS: Mapping[str, str] = MappingProxyType({})


def _data(snapshot: firestore.DocumentSnapshot[Any]) -> dict[str, Any]:
    """The fields of a snapshot known to exist (``to_dict`` is typed for missing ones too)."""
    return snapshot.to_dict() or {}


def _add_counts(total: Counters, shard: dict[str, Any]) -> None:
    """Add one shard's counters (totals or an hourly bucket) into a running total."""
    for name in COUNTER_FIELDS:
        total[name] += int(shard.get(name, 0))


def route_from_document(data: dict[str, Any]) -> Route:
    return Route(
        redirect_url=data["redirect_url"],
        platforms=_platform_set(tuple(sorted(data.get("platforms", ())))),
        platform_urls=dict(data["platform_urls"]) if data.get("platform_urls") else _NO_PLATFORM_URLS,
    )


class CampaignStore:
    """Campaign CRUD and counter reads; every call is one atomic Firestore operation."""

    def __init__(self, db: firestore.Client, counter_shards: int) -> None:
        self.db = db
        self.counter_shards = counter_shards

    def create(self, values: dict[str, Any]) -> Campaign:
        now = datetime.now(timezone.utc)
        document = {**values, "platform_urls": values.get("platform_urls", {}), "created_at": now, "updated_at": now}
        for _ in range(_CREATE_ATTEMPTS):
            campaign_id = secrets.randbelow(MAX_CAMPAIGN_ID) + 1
            try:
                campaign_ref(self.db, campaign_id).create(document)
            except gexc.AlreadyExists:
                continue  # a random 53-bit id collided; draw another
            return self._campaign(campaign_id, document, zero_counters())
        raise RuntimeError("could not draw an unused campaign id")

    def get(self, campaign_id: int) -> Campaign:
        snapshot = campaign_ref(self.db, campaign_id).get()
        if not snapshot.exists:
            raise NotFound(f"campaign {campaign_id} not found")
        return self._campaign(campaign_id, _data(snapshot), self.counters([campaign_id])[campaign_id])

    def get_route(self, campaign_id: int) -> Route | None:
        snapshot = campaign_ref(self.db, campaign_id).get()
        return route_from_document(_data(snapshot)) if snapshot.exists else None

    def list(self, platforms: Sequence[str] = ()) -> list[Campaign]:
        """Newest first, keeping only campaigns that target every platform in ``platforms``."""
        query = self.db.collection(CAMPAIGNS).order_by("created_at", direction=firestore.Query.DESCENDING)
        wanted = set(platforms)
        documents = [(int(s.id), _data(s)) for s in query.stream()]
        documents = [(i, d) for i, d in documents if wanted.issubset(d.get("platforms", ()))]
        counters = self.counters([i for i, _ in documents])
        return [self._campaign(i, d, counters[i]) for i, d in documents]

    def update(self, campaign_id: int, values: dict[str, Any]) -> Campaign:
        try:
            campaign_ref(self.db, campaign_id).update({**values, "updated_at": datetime.now(timezone.utc)})
        except gexc.NotFound:
            raise NotFound(f"campaign {campaign_id} not found") from None
        return self.get(campaign_id)

    def delete(self, campaign_id: int) -> None:
        """Delete the campaign, then its counters; late clicks for it become poison events."""
        ref = campaign_ref(self.db, campaign_id)
        try:
            ref.delete(option=self.db.write_option(exists=True))
        except gexc.NotFound:
            raise NotFound(f"campaign {campaign_id} not found") from None
        self.db.recursive_delete(ref)

    def counters(self, campaign_ids: Iterable[int]) -> dict[int, Counters]:
        """Exact totals for each campaign, summed over its shards in one round trip."""
        totals = {campaign_id: zero_counters() for campaign_id in campaign_ids}
        refs = [shard_ref(self.db, i, k) for i in totals for k in range(self.counter_shards)]
        for snapshot in self.db.get_all(refs) if refs else ():
            if snapshot.exists:
                _add_counts(totals[int(snapshot.reference.parent.parent.id)], _data(snapshot))
        return totals

    def hourly(self, campaign_id: int) -> dict[datetime, Counters]:
        """Per-hour counts (UTC hour start to counters), summed over shards, oldest first."""
        series: dict[datetime, Counters] = {}
        for snapshot in campaign_ref(self.db, campaign_id).collection(HOURLY).order_by("hour").stream():
            data = _data(snapshot)
            _add_counts(series.setdefault(data["hour"], zero_counters()), data)
        return series

    @staticmethod
    def _campaign(campaign_id: int, data: dict[str, Any], counters: Counters) -> Campaign:
        return Campaign(
            id=campaign_id,
            redirect_url=data["redirect_url"],
            platforms=list(data.get("platforms", ())),
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            platform_urls=dict(data.get("platform_urls") or {}),
            counters=counters,
        )
