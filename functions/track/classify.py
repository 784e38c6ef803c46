"""Who clicked: the platform a browser runs on, and whether it is a robot at all.

Both answers come from maintained data sets rather than patterns of our own:
User-Agent strings change with every phone and every preview service, and a
hand-kept table is wrong within months. ``ua-parser`` (uap-core's rules, run by
the ``ua-parser-rs`` native engine) and ``crawlerdetect`` are updated upstream;
bumping their pins is how this module learns about new devices and bots.

Rules are compiled when first needed: the crawler pattern, which every click
with a User-Agent needs, by :func:`compile_bot_pattern` as an instance starts
(about 15 ms); ua-parser's only for clicks without ``?platform=`` (see
``_os_parser``). The same User-Agents repeat all day, so each answer is also
cached.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache, lru_cache, partial
from typing import TYPE_CHECKING, Final, Literal

from crawlerdetect import CrawlerDetect  # type: ignore[import-untyped]

from shared.platforms import ANDROID, IPHONE, WINDOWS_PHONE

if TYPE_CHECKING:
    from ua_parser import Matchers, Parser

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


def _build_parser(*domains: Literal["os", "device"]) -> Parser:
    """A parser for these domains only, without ua-parser's own cache: the lru_caches below hold the answers.

    The ua-parser-rs engine is ~18x faster per string than pure Python, and
    compiles every rule it is given when it is built, so rules of the domains
    left out are never compiled. Without its wheel, the pure Python resolver
    gets the same rules, eager so that compiling them does not stall clicks
    (uap-core's eager rules compile all domains at once: no time is saved).

    ua-parser itself is imported here, with the first parser: its import
    costs a cold start about 8 ms (16 ms where PyYAML is installed, which it
    then imports too), and an instance whose clicks all carry ?platform=
    never needs it.
    """
    from ua_parser import BasicResolver, Parser, load_builtins, load_lazy_builtins

    try:
        from ua_parser.regex import Resolver
    except ImportError:  # no ua-parser-rs wheel for this platform: slower, still correct
        return Parser(BasicResolver(_only(load_builtins(), domains)))
    return Parser(Resolver(_only(load_lazy_builtins(), domains)))


def _only(matchers: Matchers, domains: Collection[str]) -> Matchers:
    """The rules of ``domains``; never the browser rules, which no answer needs."""
    _, oses, devices = matchers
    return [], oses if "os" in domains else [], devices if "device" in domains else []


# The User-Agent decides only for clicks without ?platform=, which the links of
# the original o7 clients always carry, so its rules are compiled on the first
# such click, not with the instance: the OS rules (about 10 ms), which decide
# alone for every platform but iOS, and on the first iOS User-Agent, the device
# rules (about 80 ms, during which the instance's other clicks wait once).
_os_parser: Final = cache(partial(_build_parser, "os"))
_device_parser: Final = cache(partial(_build_parser, "device"))


@cache
def _crawlers() -> CrawlerDetect:
    crawlers = CrawlerDetect()
    # crawlerdetect compiles its one large pattern (~15 ms) on first use. The
    # probe must survive its exclusion list (which strips e.g. "Mozilla/5.0" to
    # nothing and then skips the pattern), or nothing would be compiled.
    crawlers.is_crawler("o7tracker")
    return crawlers


def compile_bot_pattern() -> None:
    """Compile the crawler pattern now: every click with a User-Agent is checked against it, so the
    instance's first click would otherwise wait for it."""
    _crawlers()


@lru_cache(maxsize=CACHE_SIZE)
def detect_platform(user_agent: str) -> str | None:
    """The campaign platform the browser runs on, or None when it is none of them.

    None (iPad, desktop, empty, unparseable) lets the caller fall back to the
    ?platform= parameter or the fallback URL instead of guessing.
    """
    os = _os_parser().parse_os(user_agent)
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
    return bool(_crawlers().is_crawler(agent))

