"""Campaigns in Firestore: the document layout and the admin's reads and writes.

Layout::

    campaigns/{id}                           the campaign as the admin wrote it (.status filtered on), plus
        .targets   {Platform: true}          its platforms as a map, so Firestore filters on them
        .counts    {counter: n}              exact click totals, added to by the aggregator
    campaigns/{id}/days/{YYYYMMDD}           .counts.hHH: the hour's counts, .visitors.hHH.<Platform>:
                                             a sketch of its distinct visitors (shared/sketches.py); what stats read
    journal/{id}                             click events received, not yet counted (shared/counting.py)
    producers/{id}                           the sequence numbers of one producer's counted events
    deletions/{id}                           a deleted campaign whose counters still await cleanup
    idempotency/{sha256(user, key)}          a create's Idempotency-Key: its body's hash, the campaign it
                                             made, expire_at (24 h later; TTL removes it)
    aggregator/state                         as_of: how far the shown totals are counted
    aggregator/lease                         the scheduled run that drains the subscription now
    salts/{YYYYMMDD}                         the day's visitor salt, expires by TTL (shared/visitors.py)

Readers see counts the aggregator adds in one commit per batch of clicks: one
read per campaign shown, one document per UTC day of hourly counts.

Left by the version that counted into sharded counters (schema 1 events), read
and still refreshed until none is left (functions/aggregate/legacy_totals.py):

    campaigns/{id}.totals                    the shards' sum; readers add it to .counts
    campaigns/{id}/counter_shards/{k}        click totals, spread over k shards
    campaigns/{id}/hourly/{YYYYMMDDHH}-{k}   per-platform counts per UTC hour, sharded alike
    campaigns/{id}/days/{YYYYMMDD}.hours.hHH the hour's counts summed over shards
    dirty/{id}-{k}                           shard k changed since its totals were refreshed
    clicks/{click_id}                        dedup record of a counted schema 1 event, expires by TTL
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core import retry as retries
from google.cloud import firestore

from shared.errors import BadRequest, NotFound, PreconditionFailed, ServiceUnavailable, UnprocessableContent
from shared.ids import CampaignIds
from shared.models import (
    ACTIVE,
    LISTED_BY_DEFAULT,
    NEVER,
    SINCE_EVER,
    STATUSES,
    Campaign,
    Counters,
    Route,
    check_window,
    zero_counters,
)
from shared.platforms import COUNTER_FIELDS, TOTAL_FIELD
from shared.utc import as_utc

CAMPAIGNS = "campaigns"
COUNTER_SHARDS = "counter_shards"
HOURLY = "hourly"
DAYS = "days"
DAY_HOURS = "hours"
MARKED_HOURS = "hours"
DIRTY = "dirty"
DELETIONS = "deletions"
CLICKS = "clicks"
TARGETS = "targets"
STATUS = "status"
TOTALS = "totals"
COUNTS = "counts"
JOURNAL = "journal"
PRODUCERS = "producers"
IDEMPOTENCY = "idempotency"
VISITORS = "visitors"
SALTS = "salts"
AS_OF = "as_of"
# Per partition (by its number as a string): the moment before which it has counted every click.
PARTITIONS_AS_OF = "partitions_as_of"
EXPIRE_AT = "expire_at"
# Orders and filters documents by their name, as Firestore knows the id field.
DOCUMENT_NAME = "__name__"

MAX_WRITES_PER_COMMIT = 500  # Firestore's limit for one commit or batched write

IDEMPOTENCY_TTL = timedelta(hours=24)
_CREATE_ATTEMPTS = 5
# The aggregator adds to a campaign's counters in its document: a conditional edit that
# loses the race to such a commit compares again. Commits touch a campaign a few times a
# minute; this many lost races in a row take a long burst of them.
_CONDITIONAL_WRITE_ATTEMPTS = 20
# Deadline of each Firestore call the admin's requests make.
REQUEST_TIMEOUT_SECONDS = 30.0
# A query streamed past its deadline, or cut by a passing error, is taken up again after the
# last document it gave: the whole list, however long, runs as calls of REQUEST_TIMEOUT_SECONDS
# each. (With its default retry, this client fails instead of taking it up.) Getting the query
# started is retried within one deadline, so an unreachable Firestore answers in time.
QUERY_RETRY = retries.Retry(
    predicate=retries.if_exception_type(gexc.DeadlineExceeded, gexc.ServiceUnavailable, gexc.InternalServerError),
    initial=0.1, maximum=5.0, timeout=REQUEST_TIMEOUT_SECONDS,
)


def campaign_ref(db: firestore.Client, campaign_id: int) -> firestore.DocumentReference:
    return db.collection(CAMPAIGNS).document(str(campaign_id))


def shard_ref(db: firestore.Client, campaign_id: int, shard: int) -> firestore.DocumentReference:
    return db.document(CAMPAIGNS, str(campaign_id), COUNTER_SHARDS, str(shard))


def hourly_ref(db: firestore.Client, campaign_id: int, hour: datetime, shard: int) -> firestore.DocumentReference:
    return db.document(CAMPAIGNS, str(campaign_id), HOURLY, f"{hour:%Y%m%d%H}-{shard}")


def day_ref(db: firestore.Client, campaign_id: int, day: datetime) -> firestore.DocumentReference:
    return db.document(CAMPAIGNS, str(campaign_id), DAYS, f"{day:%Y%m%d}")


def hour_key(hour: datetime) -> str:
    """An hour as a marker lists it."""
    return f"{hour:%Y%m%d%H}"


def hour_from_key(key: str) -> datetime:
    return datetime.strptime(key, "%Y%m%d%H").replace(tzinfo=timezone.utc)


def day_hour_field(hour: datetime) -> str:
    """The hour's field in its day document (a field name may not start with a digit)."""
    return f"h{hour:%H}"


def dirty_ref(db: firestore.Client, campaign_id: int, shard: int) -> firestore.DocumentReference:
    return db.collection(DIRTY).document(f"{campaign_id}-{shard}")


def deletion_ref(db: firestore.Client, campaign_id: int) -> firestore.DocumentReference:
    return db.collection(DELETIONS).document(str(campaign_id))


def state_ref(db: firestore.Client) -> firestore.DocumentReference:
    return db.collection("aggregator").document("state")


def click_ref(db: firestore.Client, click_id: str) -> firestore.DocumentReference:
    return db.collection(CLICKS).document(click_id)


def producer_ref(db: firestore.Client, producer: str) -> firestore.DocumentReference:
    return db.collection(PRODUCERS).document(producer)


def idempotency_ref(db: firestore.Client, key_id: str) -> firestore.DocumentReference:
    return db.collection(IDEMPOTENCY).document(key_id)


@functools.cache
def _platform_set(platforms: tuple[str, ...]) -> frozenset[str]:
    """One shared set per combination: a full track cache holds 100,000 routes but a handful of these."""
    return frozenset(platforms)


_NO_PLATFORM_URLS: Mapping[str, str] = MappingProxyType({})


def data_of(snapshot: firestore.DocumentSnapshot[Any]) -> dict[str, Any]:
    """The fields of a snapshot known to exist (``to_dict`` is typed for missing ones too)."""
    return snapshot.to_dict() or {}


def add_counts(total: Counters, shard: Mapping[str, Any]) -> None:
    """Add one shard's counters (totals or an hourly bucket) into a running total."""
    for name in COUNTER_FIELDS:
        total[name] += int(shard.get(name, 0))


def targets_of(platforms: Iterable[str]) -> dict[str, bool]:
    """The ``targets`` map stored beside ``platforms``: equality filters need one field per platform."""
    return dict.fromkeys(platforms, True)


def clicks_counted(data: Mapping[str, Any]) -> int:
    """A campaign document's human clicks, as readers show them: the previous version's totals and the
    journal's counts."""
    return sum(int((data.get(part) or {}).get(TOTAL_FIELD, 0)) for part in (TOTALS, COUNTS))


def _epoch(moment: Any, unset: float) -> float:
    return unset if moment is None else float(moment.timestamp())


def route_from_document(data: dict[str, Any]) -> Route:
    max_clicks = data.get("max_clicks")
    # Campaigns written before the lifecycle fields existed have none of them: active, without dates.
    counting = data.get(STATUS, ACTIVE) == ACTIVE and (max_clicks is None or clicks_counted(data) < max_clicks)
    return Route(
        redirect_url=data["redirect_url"],
        platforms=_platform_set(tuple(sorted(data.get("platforms", ())))),
        platform_urls=dict(data["platform_urls"]) if data.get("platform_urls") else _NO_PLATFORM_URLS,
        forward_query=data.get("forward_query") is True,  # absent from campaigns written before it existed
        fallback_url=data.get("fallback_url"),
        counts_from=_epoch(data.get("starts_at"), SINCE_EVER) if counting else NEVER,
        counts_until=_epoch(data.get("ends_at"), NEVER),
    )


def new_campaign_document(values: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A new campaign's document from its validated writable fields."""
    return {
        "platform_urls": {},
        "forward_query": False,
        STATUS: ACTIVE,  # always stored: the list filters on it
        "starts_at": None,
        "ends_at": None,
        "max_clicks": None,
        "fallback_url": None,
        **values,
        TARGETS: targets_of(values["platforms"]),
        "created_at": now,
        "updated_at": now,
    }


@dataclass(frozen=True)
class Idempotency:
    """A create's ``Idempotency-Key``, as stored: whose key it is, and the body it came with."""

    key_id: str
    """The key's document: a hash of the user and the key, so neither is stored."""
    body_sha256: str

    @classmethod
    def of(cls, user: str, key: str, body: Any) -> Idempotency:
        """The same JSON body hashes alike however its keys are ordered or spaced."""
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return cls(_sha256(json.dumps([user, key])), _sha256(canonical))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Hourly:
    """A campaign's clicks per UTC hour, as the day documents hold them."""

    counts: dict[datetime, Counters]
    """Hour start to counters, for the hours that had clicks, oldest first."""
    visitors: dict[datetime, dict[str, bytes]]
    """Hour start to platform to the sketch of its distinct visitors (shared/sketches.py), oldest first."""


@dataclass(frozen=True)
class CampaignPage:
    campaigns: list[Campaign]
    next_cursor: str | None
    """Opaque; passed back as ``cursor`` it continues after the last campaign of this page."""


def encode_cursor(created_at: datetime, campaign_id: int) -> str:
    raw = json.dumps([as_utc(created_at).isoformat(timespec="microseconds"), campaign_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, campaign_id = json.loads(raw)
        moment = datetime.fromisoformat(created_at)
        if not isinstance(campaign_id, int) or moment.tzinfo is None:
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise BadRequest("malformed cursor; pass back the 'next' of a previous page") from None
    return moment, campaign_id


class CampaignStore:
    """Campaign CRUD and counter reads; every write is one atomic Firestore operation."""

    def __init__(self, db: firestore.Client, counter_shards: int, ids: CampaignIds) -> None:
        self.db = db
        self.counter_shards = counter_shards
        self.ids = ids

    def create(self, values: dict[str, Any], idempotency: Idempotency | None = None) -> Campaign:
        """A new campaign; with ``idempotency``, the one its key made within the last 24 hours, if any.

        The key's record is written in the campaign's own commit, on condition
        that it is still as read (absent, or expired and not yet removed by TTL):
        of requests racing with one key, one commits, and the others read again
        and answer its campaign.
        """
        now = datetime.now(timezone.utc)
        document = new_campaign_document(values, now)
        for _ in range(_CREATE_ATTEMPTS):
            campaign_id = self.ids.issue()
            batch = self.db.batch()
            batch.create(campaign_ref(self.db, campaign_id), document)
            # Never reuse the id of a deleted campaign whose counters still await
            # cleanup: the cleanup would delete the new campaign's counters.
            batch.delete(deletion_ref(self.db, campaign_id), option=self.db.write_option(exists=False))
            if idempotency is not None:
                earlier = self._claim_key(batch, idempotency, campaign_id, now)
                if earlier is not None:
                    return earlier
            try:
                batch.commit(timeout=REQUEST_TIMEOUT_SECONDS)
            except (gexc.AlreadyExists, gexc.FailedPrecondition):
                continue  # a random id collided, or a request with the same key committed first
            return self._campaign(campaign_id, document, None)
        raise RuntimeError("could not draw an unused campaign id")

    def _claim_key(
        self, batch: firestore.WriteBatch, idempotency: Idempotency, campaign_id: int, now: datetime
    ) -> Campaign | None:
        """The campaign the key made while it is valid; else None, and ``batch`` records the key for ``campaign_id``."""
        claim = idempotency_ref(self.db, idempotency.key_id).get(timeout=REQUEST_TIMEOUT_SECONDS)
        record = {"body_sha256": idempotency.body_sha256, "campaign_id": campaign_id, "created_at": now,
                  EXPIRE_AT: now + IDEMPOTENCY_TTL}
        if not claim.exists:
            batch.create(claim.reference, record)
        elif data_of(claim)[EXPIRE_AT] <= now:  # expired, and TTL has not removed it yet
            batch.update(claim.reference, record, option=self.db.write_option(last_update_time=claim.update_time))
        else:
            return self._created_before(idempotency, data_of(claim))
        return None

    def _created_before(self, idempotency: Idempotency, claim: dict[str, Any]) -> Campaign:
        campaign_id = int(claim["campaign_id"])
        if claim["body_sha256"] != idempotency.body_sha256:
            raise UnprocessableContent(f"this Idempotency-Key already created campaign {campaign_id} from another "
                                       "body; use a new key for a new campaign")
        try:
            return self.get(campaign_id)
        except NotFound:
            raise NotFound(f"campaign {campaign_id}, which this Idempotency-Key created, "
                           "has since been deleted") from None

    def get(self, campaign_id: int) -> Campaign:
        """The campaign with its refreshed totals: two document reads in one round trip."""
        refs = [campaign_ref(self.db, campaign_id), state_ref(self.db)]
        snapshots = {s.reference.path: s for s in self.db.get_all(refs, timeout=REQUEST_TIMEOUT_SECONDS)}
        snapshot = snapshots[campaign_ref(self.db, campaign_id).path]
        if not snapshot.exists:
            raise NotFound(f"campaign {campaign_id} not found")
        return self._campaign(campaign_id, data_of(snapshot), _as_of(snapshots[state_ref(self.db).path]))

    def list_page(self, platforms: Sequence[str], limit: int, cursor: str | None,
                  statuses: Sequence[str] = LISTED_BY_DEFAULT) -> CampaignPage:
        """Newest first, keeping campaigns that target every platform in ``platforms`` and have one of
        ``statuses``.

        Costs one document read per campaign returned, plus one for ``as_of``
        and one to learn whether a next page exists; the filters run in
        Firestore (``status`` in the statuses, equality on ``targets.<Platform>``;
        the composite indexes deploy.sh creates, merged by Firestore for several
        platforms). Asked for every status, the list does not filter on it.
        """
        if limit < 1:
            raise BadRequest("limit must be at least 1")
        query = self._newest_first(platforms, statuses)
        if cursor is not None:
            created_at, after_id = decode_cursor(cursor)
            query = query.start_after({"created_at": created_at, DOCUMENT_NAME: campaign_ref(self.db, after_id)})
        as_of = self.as_of()
        snapshots = query.limit(limit + 1).stream(retry=QUERY_RETRY, timeout=REQUEST_TIMEOUT_SECONDS)
        campaigns = [self._campaign(int(s.id), data_of(s), as_of) for s in snapshots]
        if len(campaigns) <= limit:
            return CampaignPage(campaigns, None)
        last = campaigns[limit - 1]
        return CampaignPage(campaigns[:limit], encode_cursor(last.created_at, last.id))

    def stream(self, platforms: Sequence[str], statuses: Sequence[str] = LISTED_BY_DEFAULT) -> Iterator[Campaign]:
        """Every campaign of :meth:`list_page`'s order and filters, each as Firestore sends it: memory stays flat.

        Nothing is read before the first campaign is asked for; then ``as_of``
        and the first documents are. A list read for longer than
        ``REQUEST_TIMEOUT_SECONDS`` is read in parts (see ``QUERY_RETRY``), each
        consistent in itself.
        """
        as_of = self.as_of()
        query = self._newest_first(platforms, statuses)
        for snapshot in query.stream(retry=QUERY_RETRY, timeout=REQUEST_TIMEOUT_SECONDS):
            yield self._campaign(int(snapshot.id), data_of(snapshot), as_of)

    def _newest_first(self, platforms: Sequence[str], statuses: Sequence[str]) -> firestore.Query:
        query = self.db.collection(CAMPAIGNS).order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
            DOCUMENT_NAME, direction=firestore.Query.DESCENDING
        )
        for platform in dict.fromkeys(platforms):
            query = query.where(filter=firestore.FieldFilter(f"{TARGETS}.{platform}", "==", True))
        if set(statuses) != set(STATUSES):
            query = query.where(filter=firestore.FieldFilter(STATUS, "in", list(dict.fromkeys(statuses))))
        return query

    def update(self, campaign_id: int, values: dict[str, Any], versions: Collection[str] | None = None) -> Campaign:
        """Change the campaign's settings; with ``versions``, only while its :attr:`Campaign.version` is one of them.

        When one of the dates changes, it is checked against the other as
        stored, on condition that the campaign is still as read, so that two
        edits at once cannot leave the end before the start.
        """
        changes = {**values, "updated_at": datetime.now(timezone.utc)}
        if "platforms" in values:
            changes[TARGETS] = targets_of(values["platforms"])

        def write(condition: firestore.WriteOption | None) -> None:
            try:
                campaign_ref(self.db, campaign_id).update(changes, option=condition, timeout=REQUEST_TIMEOUT_SECONDS)
            except gexc.NotFound:
                raise NotFound(f"campaign {campaign_id} not found") from None

        def check_window_as_stored(stored: dict[str, Any]) -> None:
            check_window(values.get("starts_at", stored.get("starts_at")), values.get("ends_at", stored.get("ends_at")))

        one_date = ("starts_at" in values) != ("ends_at" in values)
        self._write(campaign_id, versions, write, check_window_as_stored if one_date else None)
        return self.get(campaign_id)

    def delete(self, campaign_id: int, versions: Collection[str] | None = None) -> None:
        """Delete the campaign and leave a tombstone; the aggregator removes its counters later.

        One atomic write, however many counters and hourly buckets the campaign
        has. From here on its late clicks are poison events. With ``versions``,
        only while its :attr:`Campaign.version` is one of them.
        """

        def write(condition: firestore.WriteOption | None) -> None:
            batch = self.db.batch()
            batch.delete(campaign_ref(self.db, campaign_id), option=condition or self.db.write_option(exists=True))
            batch.set(deletion_ref(self.db, campaign_id), {"deleted_at": firestore.SERVER_TIMESTAMP})
            try:
                batch.commit(timeout=REQUEST_TIMEOUT_SECONDS)
            except gexc.NotFound:
                raise NotFound(f"campaign {campaign_id} not found") from None

        self._write(campaign_id, versions, write)

    def _write(
        self, campaign_id: int, versions: Collection[str] | None,
        write: Callable[[firestore.WriteOption | None], None],
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Call ``write`` with the condition to write the campaign on: that it exists (None) without ``versions``
        or ``check``, else that it is still as read when its version was one of ``versions`` (an HTTP If-Match)
        and ``check`` passed on its stored fields.

        The version is compared with the document as read, and the write made on
        condition that the document is still as read. The aggregator's commits
        add to the counters in the same document, failing that condition without
        changing the version; so a failed condition means reading and comparing
        again, and only a changed version answers 412.
        """
        if versions is None and check is None:
            write(None)
            return
        for _ in range(_CONDITIONAL_WRITE_ATTEMPTS):
            snapshot = self._read_for_write(campaign_id)
            if not snapshot.exists:
                raise NotFound(f"campaign {campaign_id} not found")
            stored = data_of(snapshot)
            if versions is not None and self._campaign(campaign_id, stored, None).version not in versions:
                raise PreconditionFailed(f"campaign {campaign_id} is not at a version If-Match names: it has changed "
                                         "since it was read; read it again, then make the change")
            if check is not None:
                check(stored)
            try:
                write(self.db.write_option(last_update_time=snapshot.update_time))
                return
            except gexc.FailedPrecondition:
                continue  # written since it was read: its counters, or another edit
        raise ServiceUnavailable(f"campaign {campaign_id} kept changing while it was being written; try again", 1)

    def _read_for_write(self, campaign_id: int) -> firestore.DocumentSnapshot[Any]:
        return campaign_ref(self.db, campaign_id).get(timeout=REQUEST_TIMEOUT_SECONDS)

    def hourly(self, campaign_id: int, start: datetime, end: datetime) -> Hourly:
        """Per-hour counts and visitor sketches for the UTC hours in [start, end) that had clicks.

        One read for the campaign and one per UTC day in the range: 31 for 30 days.
        """
        if not campaign_ref(self.db, campaign_id).get(field_paths=[], timeout=REQUEST_TIMEOUT_SECONDS).exists:
            raise NotFound(f"campaign {campaign_id} not found")
        start, end = as_utc(start), as_utc(end)
        first_day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        query = (
            campaign_ref(self.db, campaign_id).collection(DAYS)
            .where(filter=firestore.FieldFilter("day", ">=", first_day))
            .where(filter=firestore.FieldFilter("day", "<", end))
            .order_by("day")
        )
        series: dict[datetime, Counters] = {}
        visitors: dict[datetime, dict[str, bytes]] = {}
        for snapshot in query.stream(timeout=REQUEST_TIMEOUT_SECONDS):
            data = data_of(snapshot)
            day = as_utc(data["day"])
            for hours in (data.get(DAY_HOURS, {}), data.get(COUNTS, {})):
                for field_name, counts in hours.items():
                    hour = day.replace(hour=int(field_name[1:]))
                    if start <= hour < end:
                        add_counts(series.setdefault(hour, zero_counters()), counts)
            for field_name, sketches in data.get(VISITORS, {}).items():
                hour = day.replace(hour=int(field_name[1:]))
                if start <= hour < end:
                    visitors[hour] = dict(sketches)
        return Hourly(dict(sorted(series.items())), dict(sorted(visitors.items())))

    def as_of(self) -> datetime | None:
        """How far the counts, totals and hourly alike, are folded: one moment for every campaign."""
        return read_as_of(self.db)

    def _campaign(self, campaign_id: int, data: dict[str, Any], as_of: datetime | None) -> Campaign:
        counters = zero_counters()
        add_counts(counters, data.get(TOTALS) or {})
        add_counts(counters, data.get(COUNTS) or {})
        return Campaign(
            id=campaign_id,
            redirect_url=data["redirect_url"],
            platforms=list(data.get("platforms", ())),
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            platform_urls=dict(data.get("platform_urls") or {}),
            forward_query=data.get("forward_query") is True,
            status=data.get(STATUS, ACTIVE),
            starts_at=_moment(data.get("starts_at")),
            ends_at=_moment(data.get("ends_at")),
            max_clicks=data.get("max_clicks"),
            fallback_url=data.get("fallback_url"),
            counters=counters,
            as_of=as_of,
        )


def sum_shards(
    snapshots: Iterable[firestore.DocumentSnapshot[Any]], campaign_ids: Iterable[int]
) -> dict[int, Counters]:
    """Each campaign's counter shards among ``snapshots`` summed (missing shards count zero)."""
    totals = {campaign_id: zero_counters() for campaign_id in campaign_ids}
    for snapshot in snapshots:
        if snapshot.exists:
            add_counts(totals[int(snapshot.reference.parent.parent.id)], data_of(snapshot))
    return totals


def _moment(value: Any) -> datetime | None:
    """A stored timestamp, or None, as a plain UTC datetime."""
    return None if value is None else as_utc(value)


def read_as_of(db: firestore.Client) -> datetime | None:
    return _as_of(state_ref(db).get(timeout=REQUEST_TIMEOUT_SECONDS))


def _as_of(snapshot: firestore.DocumentSnapshot[Any]) -> datetime | None:
    return _moment(data_of(snapshot).get(AS_OF)) if snapshot.exists else None
