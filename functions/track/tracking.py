"""The click: find the campaign, publish the event, choose where to send the browser."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import cast

from classify import compile_bot_pattern, detect_platform, is_bot
from forwarding import merge_click_query
from google.cloud import firestore
from google.pubsub_v1 import PublisherAsyncClient
from google.pubsub_v1.services.publisher.transports.grpc_asyncio import PublisherGrpcAsyncIOTransport
from route_cache import LookupTimeout, RouteCache
from visitor_keys import SaltReader, VisitorKeys

from shared.addresses import client_address
from shared.config import PROJECT, Settings
from shared.events import MAX_HEADER_CHARS, ClickEvent
from shared.ids import CampaignIds, in_registry, keyed_ids
from shared.legacy_ids import LegacyIds
from shared.logs import get_logger
from shared.models import Route, parse_campaign_id
from shared.partitions import Producers
from shared.platforms import is_platform
from shared.publishing import GroupPublisher
from shared.store import CAMPAIGNS, route_from_document

log = get_logger("track")

# The original layout (/track/<id>) and a function URL of its own (/<id>).
_TRACK_PATH = re.compile(r"^(?:/track)?/([^/]+)/?$")

CLICK_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class ClickRequest:
    path: str
    platform: str | None  # the ?platform= parameter, which wins over the User-Agent
    query: bytes = b""  # the raw query string, forwarded to a campaign with forward_query
    user_agent: str = ""
    referrer: str = ""
    method: str = "GET"
    forwarded_for: str = ""  # the X-Forwarded-For header
    peer: str | None = None  # the address the connection came from


def campaign_id_from_path(path: str) -> int | None:
    match = _TRACK_PATH.match(path)
    return parse_campaign_id(match.group(1)) if match else None


class Tracker:
    def __init__(
        self,
        routes: RouteCache,
        publisher: GroupPublisher,
        fallback_url: str,
        ids: CampaignIds,
        legacy_ids: LegacyIds,
        producers: Producers,
        visitors: VisitorKeys,
        *,
        behind_google_front_end: bool,
    ) -> None:
        self.routes = routes
        self.publisher = publisher
        self.fallback_url = fallback_url
        self.ids = ids
        # The registry of ids issued before ids were keyed, read in the background from the instance's start.
        self.legacy_ids = legacy_ids
        self.producers = producers
        self.visitors = visitors
        self.behind_google_front_end = behind_google_front_end

    async def click(self, request: ClickRequest) -> str:
        """The redirect target; every link that cannot be counted goes to a fallback: its campaign's, when
        the campaign is known and has one, else the global one.

        A lookup past its deadline is logged here without a traceback; any
        other failure (Firestore refusing a read on a cache miss, say)
        propagates to the app serving the function, which logs it and sends
        the click to the same fallback (``web.ClickApp``).
        """
        try:
            return await self._click(request)
        except LookupTimeout as exc:
            log.error("click sent to the fallback: %s", exc, extra={"path": request.path, "error": repr(exc)})
        return self.fallback_url

    async def aclose(self) -> None:
        self.legacy_ids.cancel()
        await self.visitors.aclose()
        await self.publisher.aclose()

    async def _click(self, request: ClickRequest) -> str:
        campaign_id = campaign_id_from_path(request.path)
        # An id that was never issued must cost no lookup, or a flood of made-up
        # ids would be a flood of Firestore reads. A keyed id passes on its own;
        # one that fails the check is looked up unless the registry, once read,
        # rules it out.
        if campaign_id is None or not (self.ids.verify(campaign_id)
                                       or in_registry(campaign_id, self.legacy_ids.current())):
            return self.fallback_url
        route = await self.routes.get(campaign_id)
        if route is None:
            return self.fallback_url
        # Classified as the event will carry it: an 8 KB header must not
        # become an 8 KB key in each of the classifier's caches.
        user_agent = request.user_agent[:MAX_HEADER_CHARS]
        platform = request.platform or detect_platform(user_agent)
        # HEAD requests and crawlers are previews, not people: they see where
        # a person would go but are counted apart, platform or not.
        bot = request.method == "HEAD" or is_bot(user_agent)
        # The click's own time decides its campaign's dates, and is the time its event carries.
        now = datetime.now(timezone.utc)
        targeted = platform in route.platforms
        if route.counts_at(now.timestamp()) and (targeted or bot):
            counted = platform if targeted else None
            # Bot clicks count apart, never as visitors: they need no key.
            visitor = "" if bot else await self.visitors.key(self._client(request), user_agent, now)
            await self._publish(request, campaign_id, counted, user_agent, bot, now, inactive=False, visitor=visitor)
            if route.forward_query and request.query:
                return merge_click_query(route.destination(counted), request.query)
            return route.destination(counted)
        # Counted apart, so that traffic after a campaign's end still shows; a click that names no
        # platform at all (a desktop, say) counts nowhere, as it never could. Like a bot's, such a
        # click is never a visitor, so it needs no key.
        known = platform if is_platform(platform) else None
        if known is not None or bot:
            await self._publish(request, campaign_id, known, user_agent, bot, now, inactive=True)
        return route.fallback_url or self.fallback_url

    async def _publish(self, request: ClickRequest, campaign_id: int, platform: str | None, user_agent: str,
                       bot: bool, now: datetime, *, inactive: bool, visitor: str = "") -> None:
        await self.publisher.publish(ClickEvent.new(
            campaign_id, platform, producer=self.producers.next(), user_agent=user_agent, referrer=request.referrer,
            bot=bot, inactive=inactive, now=now, visitor=visitor))

    def _client(self, request: ClickRequest) -> str:
        return client_address(request.forwarded_for, request.peer, behind_google_front_end=self.behind_google_front_end)


class CampaignReader:
    """The one Firestore read on the click path: a campaign's route, with a deadline."""

    def __init__(self, db: firestore.AsyncClient, timeout: float) -> None:
        self.db = db
        self.timeout = timeout

    async def __call__(self, campaign_id: int) -> Route | None:
        # No retry: within the click's deadline a second attempt rarely helps,
        # and a miss is cached only briefly anyway.
        snapshot = await self.db.collection(CAMPAIGNS).document(str(campaign_id)).get(
            retry=None, timeout=self.timeout)
        return route_from_document(snapshot.to_dict() or {}) if snapshot.exists else None


async def start_tracker(settings: Settings) -> Tracker:
    """The instance's tracker, ready for its first click; built as the instance starts, inside the event loop
    its async clients bind to.

    While the crawler pattern, which a click with a User-Agent needs,
    compiles in a thread, the Pub/Sub connection opens and the legacy-id
    registry's read begins, which opens the Firestore connection the campaign
    reads then use (on Cloud Run each waits for a token and a TLS handshake).
    Only a click whose id fails the keyed check needs that registry: the
    read goes on in the background, and until it is done such a click is
    looked up, as on an instance without a registry.
    """
    db = firestore.AsyncClient(project=settings.required(PROJECT))
    publisher = PublisherAsyncClient()
    # The async client's transport is always gRPC's; the channel connects in the background.
    cast(PublisherGrpcAsyncIOTransport, publisher.transport).grpc_channel.get_state(try_to_connect=True)
    legacy_ids = LegacyIds(db)
    await asyncio.to_thread(compile_bot_pattern)
    return build_tracker(settings, legacy_ids, db, publisher)


def build_tracker(settings: Settings, legacy_ids: LegacyIds,
                  db: firestore.AsyncClient, publisher: PublisherAsyncClient) -> Tracker:
    """The tracker over the instance's clients, as its settings shape it."""
    reader = CampaignReader(db, settings.lookup_timeout_seconds)
    routes = RouteCache(
        reader,
        maxsize=settings.cache_max_size,
        ttl=settings.cache_ttl_seconds,
        negative_ttl=settings.negative_cache_ttl_seconds,
        timeout=settings.lookup_timeout_seconds,
    )
    group_publisher = GroupPublisher(
        publisher,
        f"projects/{settings.required(PROJECT)}/topics/{settings.clicks_topic}",
        wait_seconds=settings.publish_wait_seconds,
        deadline_seconds=settings.publish_deadline_seconds,
        batch_max_messages=settings.publish_batch_max_messages,
        max_in_flight=settings.publish_max_in_flight,
        buffer_max_messages=settings.publish_buffer_max_messages,
        buffer_max_bytes=settings.publish_buffer_max_bytes,
        partitions=settings.aggregate_partitions,
    )
    visitors = VisitorKeys(SaltReader(db, settings.lookup_timeout_seconds), settings.lookup_timeout_seconds)
    # Built per worker, after the fork: each worker numbers its own events.
    return Tracker(routes, group_publisher, settings.fallback_url, keyed_ids(settings), legacy_ids,
                   Producers(settings.aggregate_partitions), visitors,
                   behind_google_front_end=settings.k_service is not None)
