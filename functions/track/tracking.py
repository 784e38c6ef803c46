"""The click: find the campaign, publish the event, choose where to send the browser."""

from __future__ import annotations

import re
from dataclasses import dataclass

from classify import detect_platform, is_bot
from google.cloud import firestore, pubsub_v1
from route_cache import RouteCache

from shared.config import PROJECT, Settings
from shared.events import MAX_HEADER_CHARS, ClickEvent
from shared.logs import get_logger
from shared.models import parse_campaign_id
from shared.publishing import ClickPublisher, batch_settings
from shared.store import CampaignStore

log = get_logger("track")

# The original layout (/track/<id>) and a function URL of its own (/<id>).
_TRACK_PATH = re.compile(r"^(?:/track)?/([^/]+)/?$")


@dataclass(frozen=True, slots=True)
class ClickRequest:
    path: str
    platform: str | None  # the ?platform= parameter, which wins over the User-Agent
    user_agent: str = ""
    referrer: str = ""
    method: str = "GET"


def campaign_id_from_path(path: str) -> int | None:
    match = _TRACK_PATH.match(path)
    return parse_campaign_id(match.group(1)) if match else None


class Tracker:
    def __init__(self, routes: RouteCache, publisher: ClickPublisher, fallback_url: str) -> None:
        self.routes = routes
        self.publisher = publisher
        self.fallback_url = fallback_url

    def click(self, request: ClickRequest) -> str:
        """The redirect target; every link that cannot be counted goes to the fallback.

        A link must never end on an error page, so even a failure (Firestore
        unreachable on a cache miss, say) is logged and sent to the fallback.
        """
        try:
            return self._click(request)
        except Exception:
            log.exception("click failed; sent to the fallback", extra={"path": request.path,
                                                                      "platform": request.platform})
            return self.fallback_url

    def _click(self, request: ClickRequest) -> str:
        campaign_id = campaign_id_from_path(request.path)
        if campaign_id is None:
            return self.fallback_url
        route = self.routes.get(campaign_id)
        if route is None:
            return self.fallback_url
        # Classified as the event will carry it: an 8 KB header must not
        # become an 8 KB key in each of the classifier's caches.
        user_agent = request.user_agent[:MAX_HEADER_CHARS]
        platform = request.platform or detect_platform(user_agent)
        if platform not in route.platforms:
            platform = None
        # HEAD requests and crawlers are previews, not people: they see the
        # campaign's destination but are counted apart, platform or not.
        bot = request.method == "HEAD" or is_bot(user_agent)
        if platform is None and not bot:
            return self.fallback_url
        event = ClickEvent.new(
            campaign_id, platform, user_agent=user_agent, referrer=request.referrer, bot=bot
        )
        self.publisher.publish(event)
        return route.destination(platform)


def build_tracker(settings: Settings) -> Tracker:
    store = CampaignStore(firestore.Client(project=settings.project), settings.counter_shards)
    routes = RouteCache(
        store.get_route,
        maxsize=settings.cache_max_size,
        ttl=settings.cache_ttl_seconds,
        negative_ttl=settings.negative_cache_ttl_seconds,
    )
    client = pubsub_v1.PublisherClient(batch_settings=batch_settings(settings.publish_max_latency_seconds))
    topic = client.topic_path(settings.required(PROJECT), settings.clicks_topic)
    return Tracker(routes, ClickPublisher(client, topic, settings.publish_timeout_seconds), settings.fallback_url)
