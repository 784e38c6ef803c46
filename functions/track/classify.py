"""Who clicked: the platform a browser runs on, and whether it is a robot at all.

Both answers come from maintained data sets rather than patterns of our own:
User-Agent strings change with every phone and every preview service, and a
hand-kept table is wrong within months. ``ua-parser`` (uap-core's rules, run by
the ``ua-parser-rs`` native engine) and ``crawlerdetect`` are updated upstream;
bumping their pins is how this module learns about new devices and bots.

Rules are compiled at import, in about 50 ms of a cold start, except those
only an iOS User-Agent without ``?platform=`` needs (see ``_os_parser``).
The same User-Agents repeat all day, so each answer is also cached.
"""

from __future__ import annotations

from functools import cache, lru_cache, partial
from typing import Final

from crawlerdetect import CrawlerDetect  # type: ignore[import-untyped]
from ua_parser import BasicResolver, Domain, Matchers, Parser, load_builtins, load_lazy_builtins

from shared.platforms import ANDROID, IPHONE, WINDOWS_PHONE

# Bounds memory on a long-lived instance (each entry is one User-Agent string,
# about a megabyte per cache when full) while keeping the ones that repeat.
CACHE_SIZE: Final = 4096


# uap-core's OS family decides on its own for these: its rules check Windows
# Phone before Android, so Windows Phone 8.1 and 10 Mobile, which also claim
# "Android" and "like iPhone", come out as Windows Phone. Android covers
# phones, tablets and in-app WebViews alike: one store serves them all.
_PLATFORM_BY_OS: Final[dict[str, str]] = {
    "Android": ANDROID,
    "Windows Phone": WINDOWS_PHONE,
}
# iOS is shared by iPhone, iPod touch and iPad; only the device tells them
# apart, and an iPad is not a platform a campaign can target.
_IOS: Final = "iOS"
_IPHONE_DEVICES: Final = frozenset({"iPhone", "iPod"})

# Command-line and library HTTP clients, by the product name that starts
# their User-Agent. crawlerdetect lists them as bots, which is right for a web
# analytics tool but wrong here: a click is any request for
# /track/<id>?platform=..., and apps and scripts make it through exactly these
# (okhttp is Android's usual HTTP stack); with the platform given, it counts.
# Matching the leading product only, and exactly, keeps bots that merely embed
# such a client (e.g. "LinkedInBot/1.0 (...; Apache-HttpClient ...)") as bots.
_HTTP_CLIENTS: Final = frozenset(
    {
        "curl",
        "wget",
        "httpie",
        "python-requests",
        "python-httpx",
        "python-urllib",
        "go-http-client",
        "okhttp",
        "axios",
        "node-fetch",
        "postmanruntime",
    }
)


def _build_parser(domains: Domain) -> Parser:
    """A parser for ``domains`` only, without ua-parser's own cache: the lru_caches below hold the answers.

    The ua-parser-rs engine is ~18x faster per string than pure Python, and
    compiles every rule it is given when it is built, so rules of the domains
    left out are never compiled. Without its wheel, the pure Python resolver
    gets the same rules, eager so that compiling them does not stall clicks
    (uap-core's eager rules compile all domains at once: no time is saved).
    """
    try:
        from ua_parser.regex import Resolver
    except ImportError:  # no ua-parser-rs wheel for this platform: slower, still correct
        return Parser(BasicResolver(_only(load_builtins(), domains)))
    return Parser(Resolver(_only(load_lazy_builtins(), domains)))


def _only(matchers: Matchers, domains: Domain) -> Matchers:
    user_agents, oses, devices = matchers
    return (
        user_agents if Domain.USER_AGENT in domains else [],
        oses if Domain.OS in domains else [],
        devices if Domain.DEVICE in domains else [],
    )


# The OS decides alone for every platform but iOS, so only the OS rules (about
# 20 ms to compile) are built with the instance. The device rules (about 80 ms,
# during which the instance's other clicks wait once) are built on the first iOS
# User-Agent that comes without ?platform=, which the links of the original o7
# clients always carry; the browser rules, which no answer needs, never.
_os_parser: Final = _build_parser(Domain.OS)
_device_parser: Final = cache(partial(_build_parser, Domain.DEVICE))
_crawlers: Final = CrawlerDetect()
# crawlerdetect compiles its one large pattern on first use (~20-30 ms); pay
# that here rather than in the first request of every new instance. The probe
# must survive its exclusion list (which strips e.g. "Mozilla/5.0" to nothing
# and then skips the pattern), or nothing would be compiled.
_crawlers.is_crawler("o7tracker")


@lru_cache(maxsize=CACHE_SIZE)
def detect_platform(user_agent: str) -> str | None:
    """The campaign platform the browser runs on, or None when it is none of them.

    None (iPad, desktop, empty, unparseable) lets the caller fall back to the
    ?platform= parameter or the fallback URL instead of guessing.
    """
    os = _os_parser.parse_os(user_agent)
    if os is None:
        return None
    if os.family == _IOS:
        # Only iOS needs the device rules, so other strings skip that cost.
        device = _device_parser().parse_device(user_agent)
        return IPHONE if device is not None and device.family in _IPHONE_DEVICES else None
    return _PLATFORM_BY_OS.get(os.family)


@lru_cache(maxsize=CACHE_SIZE)
def is_bot(user_agent: str) -> bool:
    """Whether a click came from a crawler, link-preview fetcher or uptime monitor.

    Those fetch a link without a person behind it (a chat app unfurling it, a
    monitor probing it), so counting them would inflate a campaign's clicks.
    An empty User-Agent is not a bot: the original o7 clients may send none.
    """
    agent = user_agent.strip()
    if not agent:
        return False
    if agent.partition("/")[0].casefold() in _HTTP_CLIENTS:
        return False
    return bool(_crawlers.is_crawler(agent))

