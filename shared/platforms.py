"""The platforms a campaign can target: the single place to add one.

Adding a platform is one entry here; its counter fields are derived from the name.
"""

from __future__ import annotations

ANDROID = "Android"
IPHONE = "IPhone"
WINDOWS_PHONE = "WindowsPhone"
PLATFORMS: tuple[str, ...] = (ANDROID, IPHONE, WINDOWS_PHONE)

TOTAL_FIELD = "click_count"
BOT_FIELD = "bot_click_count"
# Clicks a campaign could not count (paused, outside its dates, capped, or on a platform it does
# not target): apart from the totals, so that traffic after the end still shows.
INACTIVE_FIELD = "inactive_click_count"


def counter_field(platform: str) -> str:
    """Name of the per-platform counter, as the original o7tracker spelled it."""
    return f"{platform.lower()}_click_count"


def inactive_counter_field(platform: str) -> str:
    return f"{platform.lower()}_inactive_click_count"


PLATFORM_FIELDS: dict[str, str] = {p: counter_field(p) for p in PLATFORMS}
INACTIVE_PLATFORM_FIELDS: dict[str, str] = {p: inactive_counter_field(p) for p in PLATFORMS}
COUNTER_FIELDS: tuple[str, ...] = (TOTAL_FIELD, *PLATFORM_FIELDS.values(), BOT_FIELD,
                                   INACTIVE_FIELD, *INACTIVE_PLATFORM_FIELDS.values())


def is_platform(name: object) -> bool:
    """Case-sensitive, as in the original: ``android`` is not ``Android``."""
    return isinstance(name, str) and name in PLATFORM_FIELDS
