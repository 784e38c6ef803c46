"""Platform and bot detection over real User-Agent strings.

``import classify`` works because tests/conftest.py puts each function directory on sys.path.
"""

from __future__ import annotations

import sys

import classify
import pytest

from shared.platforms import PLATFORMS

IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1"
)
IPHONE_CHROME = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/125.0.6422.80 Mobile/15E148 Safari/604.1"
)
IPHONE_FACEBOOK = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/21B101 [FBAN/FBIOS;FBAV/444.0.0.41.110;FBBV/540237406;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;"
    "FBSV/17.1.2;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/541684046]"
)
IPHONE_INSTAGRAM = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 Instagram 302.0.0.23.114 (iPhone13,2; iOS 16_6; en_US; en-US; scale=3.00; 1170x2532; 520949315)"
)
IPOD = (
    "Mozilla/5.0 (iPod touch; CPU iPhone OS 12_5_7 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/12.1.2 Mobile/15E148 Safari/604.1"
)
ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
ANDROID_PIXEL = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.113 Mobile Safari/537.36"
)
ANDROID_SAMSUNG_INTERNET = (
    "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.230 Safari/537.36"
)
ANDROID_WEBVIEW = (
    "Mozilla/5.0 (Linux; Android 12; SM-G991B Build/SP1A.210812.016; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/445.0.0.34.118;]"
)
ANDROID_FIREFOX = "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0"
WINDOWS_PHONE_81 = (
    "Mozilla/5.0 (Mobile; Windows Phone 8.1; Android 4.0; ARM; Trident/7.0; Touch; rv:11.0; IEMobile/11.0; "
    "NOKIA; Lumia 635) like iPhone OS 7_0_3 Mac OS X AppleWebKit/537 (KHTML, like Gecko) Mobile Safari/537"
)
WINDOWS_10_MOBILE = (
    "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.15063"
)
WINDOWS_PHONE_80 = (
    "Mozilla/5.0 (compatible; MSIE 10.0; Windows Phone 8.0; Trident/6.0; IEMobile/10.0; ARM; Touch; "
    "NOKIA; Lumia 920)"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
DESKTOP_CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
MACOS_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15"
)
LINUX_FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
GOOGLEBOT_SMARTPHONE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.6422.175 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)

PLATFORM_CASES = [
    pytest.param(IPHONE_SAFARI, "IPhone", id="iphone-safari"),
    pytest.param(IPHONE_CHROME, "IPhone", id="iphone-chrome-crios"),
    pytest.param(IPHONE_FACEBOOK, "IPhone", id="iphone-facebook-in-app"),
    pytest.param(IPHONE_INSTAGRAM, "IPhone", id="iphone-instagram-in-app"),
    pytest.param(IPOD, "IPhone", id="ipod-touch"),
    pytest.param(ANDROID_CHROME, "Android", id="android-chrome-reduced-ua"),
    pytest.param(ANDROID_PIXEL, "Android", id="android-chrome-pixel"),
    pytest.param(ANDROID_SAMSUNG_INTERNET, "Android", id="android-samsung-internet"),
    pytest.param(ANDROID_TABLET, "Android", id="android-tablet"),
    pytest.param(ANDROID_WEBVIEW, "Android", id="android-webview-wv"),
    pytest.param(ANDROID_FIREFOX, "Android", id="android-firefox"),
    pytest.param(WINDOWS_PHONE_81, "WindowsPhone", id="windows-phone-8.1-claims-android-and-iphone"),
    pytest.param(WINDOWS_10_MOBILE, "WindowsPhone", id="windows-10-mobile-edge-claims-android"),
    pytest.param(WINDOWS_PHONE_80, "WindowsPhone", id="windows-phone-8.0"),
    pytest.param(IPAD, None, id="ipad"),
    pytest.param(DESKTOP_CHROME_WINDOWS, None, id="desktop-chrome-windows"),
    pytest.param(MACOS_SAFARI, None, id="macos-safari"),
    pytest.param(LINUX_FIREFOX, None, id="linux-firefox"),
    pytest.param("", None, id="empty"),
    pytest.param("asdf 123 ;;; ((( \x00 ", None, id="garbage"),
    pytest.param("Mozilla/5.0", None, id="bare-mozilla"),
]

BOT_CASES = [
    pytest.param("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", id="googlebot"),
    pytest.param(GOOGLEBOT_SMARTPHONE, id="googlebot-smartphone"),
    pytest.param(
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
        "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
        id="bingbot",
    ),
    pytest.param("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", id="yandexbot"),
    pytest.param(
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)", id="baiduspider"
    ),
    pytest.param("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", id="duckduckbot"),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
        id="applebot",
    ),
    pytest.param("Slackbot 1.0 (+https://api.slack.com/robots)", id="slackbot"),
    pytest.param("Slack-ImgProxy (+https://api.slack.com/robots)", id="slack-imgproxy"),
    pytest.param("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", id="slackbot-linkexpanding"),
    pytest.param(
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", id="facebookexternalhit"
    ),
    pytest.param("Facebot/1.0", id="facebot"),
    pytest.param("Twitterbot/1.0", id="twitterbot"),
    pytest.param("WhatsApp/2.23.20.0 A", id="whatsapp"),
    pytest.param("TelegramBot (like TwitterBot)", id="telegrambot"),
    pytest.param("Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", id="discordbot"),
    # Names an HTTP client library inside: still a bot, the allow-list looks at the leading product only.
    pytest.param(
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)", id="linkedinbot"
    ),
    # What iMessage sends when it builds a link preview: a desktop Safari that names three fetchers.
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) "
        "Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
        id="imessage-preview",
    ),
    pytest.param("Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", id="uptimerobot"),
    pytest.param("Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)", id="pingdom"),
    pytest.param(
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/534.34 (KHTML, like Gecko) PingdomTMS/0.8.5 Safari/534.34",
        id="pingdom-tms",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 6.2; WOW64) AppleWebKit/537.4 (KHTML, like Gecko) Chrome/98 Safari/537.4 "
        "(StatusCake)",
        id="statuscake",
    ),
    pytest.param("Site24x7", id="site24x7"),
    pytest.param(
        "Better Uptime Bot Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/74.0.3729.169 Safari/537.36",
        id="better-uptime",
    ),
]

HTTP_CLIENT_CASES = [
    pytest.param("curl/8.5.0", id="curl"),
    pytest.param("curl", id="curl-no-version"),
    pytest.param("Wget/1.21.3 (linux-gnu)", id="wget"),
    pytest.param("HTTPie/3.2.2", id="httpie"),
    pytest.param("python-requests/2.31.0", id="python-requests"),
    pytest.param("Go-http-client/2.0", id="go-http-client"),
    pytest.param("okhttp/4.12.0", id="okhttp"),
]


@pytest.mark.parametrize(("user_agent", "platform"), PLATFORM_CASES)
def test_detect_platform(user_agent: str, platform: str | None) -> None:
    assert classify.detect_platform(user_agent) == platform


def test_every_platform_is_detected_and_only_known_names_come_out() -> None:
    detected = {classify.detect_platform(case.values[0]) for case in PLATFORM_CASES}
    assert detected - {None} == set(PLATFORMS)


@pytest.mark.parametrize("user_agent", BOT_CASES)
def test_known_crawlers_previewers_and_monitors_are_bots(user_agent: str) -> None:
    assert classify.is_bot(user_agent) is True


@pytest.mark.parametrize("user_agent", HTTP_CLIENT_CASES)
def test_http_clients_are_not_bots(user_agent: str) -> None:
    assert classify.is_bot(user_agent) is False


@pytest.mark.parametrize(("user_agent", "platform"), PLATFORM_CASES)
def test_people_are_not_bots(user_agent: str, platform: str | None) -> None:
    assert classify.is_bot(user_agent) is False


@pytest.mark.parametrize("user_agent", ["", "   "], ids=["empty", "blank"])
def test_a_missing_user_agent_is_not_a_bot(user_agent: str) -> None:
    assert classify.is_bot(user_agent) is False


def test_platform_and_bot_are_independent_answers() -> None:
    assert (classify.detect_platform(GOOGLEBOT_SMARTPHONE), classify.is_bot(GOOGLEBOT_SMARTPHONE)) == ("Android", True)
    assert (classify.detect_platform(IPHONE_SAFARI), classify.is_bot(IPHONE_SAFARI)) == ("IPhone", False)
    assert (classify.detect_platform("curl/8.5.0"), classify.is_bot("curl/8.5.0")) == (None, False)


@pytest.mark.parametrize("check", [classify.detect_platform, classify.is_bot], ids=["platform", "bot"])
def test_repeated_user_agents_are_answered_from_a_bounded_cache(check) -> None:  # type: ignore[no-untyped-def]
    check.cache_clear()
    first = check(ANDROID_PIXEL)
    second = check(ANDROID_PIXEL)
    info = check.cache_info()
    assert first == second
    assert (info.hits, info.misses) == (1, 1)
    assert info.maxsize == classify.CACHE_SIZE


def test_without_the_native_engine_the_pure_python_parser_gives_the_same_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the wheel ua_parser's package imports without its regex module; hidden only after that import.
    import ua_parser  # noqa: F401

    monkeypatch.setitem(sys.modules, "ua_parser.regex", None)  # as if ua-parser-rs had no wheel here
    parser = classify._build_parser("os", "device")
    assert type(parser.resolver).__module__ == "ua_parser.basic"
    os = parser.parse_os(WINDOWS_PHONE_81)
    device = parser.parse_device(IPOD)
    assert os is not None and os.family == "Windows Phone"
    assert device is not None and device.family == "iPod"
