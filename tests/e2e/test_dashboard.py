"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against ``./run.sh``.

Chromium comes from Debian (``./test.sh`` installs it); Playwright's own browsers
are never downloaded, so the page is tested as an admin's browser sees it, and
nothing it loads may come from outside this machine.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
from helpers import read_qr_codes
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Request, expect, sync_playwright
from test_stack import AUTH, ROOT, Stack, start_stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "screenshots" / "dashboard.png"
TIMEZONE = "Europe/Ljubljana"  # not the machine's, so the page must pass the browser's own zone along
# the series colours in app.js
ANDROID_RGB, IPHONE_RGB, VISITORS_RGB = (0x1F, 0x9D, 0x55), (0x25, 0x63, 0xEB), (0xDB, 0x27, 0x77)
INACTIVE_RGB = (0x93, 0x33, 0xEA)
FORWARD_QUERY = "Forward the click’s query parameters"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("dashboard") / "run.log")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the dashboard test needs Debian's Chromium "
                    "(sudo apt-get install chromium chromium-driver; ./test.sh installs it when run as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser, stack: Stack) -> Iterator[BrowserContext]:
    context = browser.new_context(
        # "always": the CSV downloads (page.request) skip the 401 challenge the login limiter counts
        base_url=stack.url, http_credentials={"username": AUTH[0], "password": AUTH[1], "send": "always"},
        viewport={"width": 1280, "height": 900}, timezone_id=TIMEZONE, locale="en-GB",
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, stack: Stack) -> Iterator[Page]:
    page = context.new_page()
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Anything the Content-Security-Policy blocks is an error too (the page has no inline script or style).
    page.expose_function("reportPolicyViolation", lambda text: errors.append(f"CSP violation: {text}"))
    page.add_init_script("document.addEventListener('securitypolicyviolation', (e) => "
                         "window.reportPolicyViolation(`${e.violatedDirective} ${e.blockedURI}`))")
    page.on("console", lambda message: errors.append(message.text)
            if "Content Security Policy" in message.text else None)

    def note_request(request: Request) -> None:
        if urlsplit(request.url).scheme in ("http", "https") and not request.url.startswith(stack.url):
            outside.append(request.url)

    page.on("request", note_request)
    yield page
    assert not errors, f"errors on the page (its scripts, or what its Content-Security-Policy blocked): {errors}"
    assert not outside, f"the page asked for something outside the machine: {outside}"


def count_pixels(page: Page, rgb: tuple[int, int, int], selector: str = ".chart canvas") -> int:
    """Pixels of the chart's canvas within a small distance of one colour: the series were drawn."""
    return int(page.eval_on_selector(selector, """(canvas, rgb) => {
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i + 3] > 200 && Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1])
                + Math.abs(data[i + 2] - rgb[2]) < 30) count++;
        }
        return count;
    }""", list(rgb)))


def drawn(image: Locator) -> bytes:
    """An image as the browser draws it, four times its size on the page (an SVG stays sharp), as PNG."""
    data_url = image.evaluate("""image => {
        const canvas = document.createElement("canvas");
        canvas.width = canvas.height = 4 * image.width;
        const context = canvas.getContext("2d");
        context.fillStyle = "#fff";
        context.fillRect(0, 0, canvas.width, canvas.height);
        context.drawImage(image, 0, 0, canvas.width, canvas.height);
        return canvas.toDataURL("image/png");
    }""")
    return base64.b64decode(data_url.removeprefix("data:image/png;base64,"))


def test_create_click_drain_and_read_the_numbers_in_the_browser(page: Page, stack: Stack) -> None:
    page.goto("/admin/")
    expect(page.get_by_role("heading", name="Campaigns", exact=True)).to_be_visible()
    expect(page.locator("#tz-name")).to_have_text(TIMEZONE)
    csv_link = page.locator("#list-csv")
    expect(csv_link).to_have_attribute("href", re.compile(r"/admin/campaigns\?format=csv$"))

    # a bad form shows the server's own message next to it, and creates nothing
    page.get_by_text("New campaign", exact=True).click()
    form = page.locator("#create-form")
    form.get_by_label("Redirect URL").fill("javascript:alert(1)")
    form.get_by_role("button", name="Create campaign").click()
    expected = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10, json={
        "redirect_url": "javascript:alert(1)", "platforms": ["Android", "IPhone", "WindowsPhone"],
        "platform_urls": {}}).json()["msg"]
    expect(page.locator("#create-error")).to_have_text(expected)
    assert requests.get(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10).json() == []

    form.get_by_label("Redirect URL").fill("https://example.com/o7-dashboard")
    form.get_by_label("Windows Phone", exact=True).uncheck()
    form.get_by_label(FORWARD_QUERY).check()
    form.get_by_role("button", name="Create campaign").click()
    expect(page.locator("#detail-body h2")).to_have_text("https://example.com/o7-dashboard")
    expect(page.locator("#create-error")).to_be_hidden()
    campaign_id = int(page.evaluate("location.hash").removeprefix("#campaign/"))
    stored = requests.get(f"{stack.url}/admin/campaigns/{campaign_id}", auth=AUTH, timeout=10).json()
    assert (stored["platforms"], stored["forward_query"]) == (["Android", "IPhone"], True)
    expect(page.locator("#detail [data-slot=forwarding]")).to_have_text(
        "A click’s query parameters are forwarded to the destination.")

    # the tracking links the page shows are the ones that count, and the copy button copies them
    links = {p: page.locator(f"#link-{p}").input_value() for p in ("Android", "IPhone")}
    assert links == {p: f"{stack.url}/track/{campaign_id}?platform={p}" for p in links}
    expect(page.locator("#link-WindowsPhone")).to_have_count(0)
    page.get_by_role("button", name="Copy the iPhone tracking link").click()
    expect(page.get_by_text("iPhone link copied.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == links["IPhone"]
    # beside each link its QR code, loaded from the admin with the page's credentials, reads as the link
    for platform, label in (("Android", "Android"), ("IPhone", "iPhone")):
        image = page.get_by_role("img", name=f"QR code of the {label} tracking link")
        expect(image).to_be_visible()
        page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=image.element_handle())
        assert read_qr_codes(drawn(image)) == [links[platform]]
        download = page.get_by_role("link", name=f"Download the {label} QR code as PNG")
        png = page.request.get(download.get_attribute("href") or "")
        assert png.ok and png.headers["content-type"] == "image/png"
        assert read_qr_codes(png.body()) == [links[platform]]
    # five clicks by three visitors: one address, three browsers
    for platform, visitor in (("Android", 1), ("Android", 1), ("Android", 2), ("IPhone", 3), ("IPhone", 3)):
        answer = requests.get(links[platform], allow_redirects=False, timeout=10,
                              headers={"User-Agent": f"Mozilla/5.0 (dashboard visitor {visitor})"})
        assert answer.status_code == 307 and answer.headers["Location"] == "https://example.com/o7-dashboard"
    assert requests.get(f"{stack.url}/tasks/update_stats", auth=AUTH, timeout=60).status_code == 200

    page.reload()
    tiles = page.locator("#detail .tiles")
    for field, value in (("click_count", "5"), ("android_click_count", "3"), ("iphone_click_count", "2"),
                         ("windowsphone_click_count", "0"), ("bot_click_count", "0")):
        expect(tiles.locator(f'dd[data-field="{field}"]')).to_have_text(value)
    row = page.locator(f'#campaigns tr[data-id="{campaign_id}"]')
    expect(row.locator('td[data-field="click_count"]')).to_have_text("5")
    expect(row.locator(".sparkline")).to_have_attribute("aria-label", re.compile(r"^5 clicks over the last 7 days"))
    expect(page.locator("#detail .as-of")).to_have_text(re.compile(r"^Counted up to \d"))
    expect(page.locator("#detail [data-slot=range-totals]")).to_have_text(
        re.compile(r"^5 clicks by 3 unique visitors, 0 bot clicks and 0 inactive"))
    expect(tiles.locator("[data-slot=range-visitors]")).to_have_text("3")
    expect(tiles.locator("[data-slot=visitors-range]")).to_have_text("last 7 days")

    # the chart is drawn: both platforms' lines and the visitors' are on the canvas, by day and by hour
    expect(page.locator("#detail .chart canvas")).to_be_visible()
    assert count_pixels(page, ANDROID_RGB) > 20 and count_pixels(page, IPHONE_RGB) > 20
    assert count_pixels(page, VISITORS_RGB) > 20
    page.get_by_role("radio", name="By hour").check()
    expect(page.locator("#chart-title")).to_have_text("Clicks by hour, last 7 days")
    expect(page.locator("#detail [data-slot=range-totals]")).to_have_text(re.compile(r"^5 clicks"))
    assert count_pixels(page, IPHONE_RGB) > 20 and count_pixels(page, VISITORS_RGB) > 20
    # By hour every click is in the last bucket, where the visitors' line (3) lies over Android's (3):
    # hidden from the legend, it uncovers it.
    visitors_legend = page.locator("#detail .u-legend .u-series", has_text="Unique visitors")
    visitors_legend.click()
    expect(visitors_legend).to_have_class(re.compile(r"\bu-off\b"))
    assert count_pixels(page, VISITORS_RGB) == 0
    assert count_pixels(page, ANDROID_RGB) > 20 and count_pixels(page, IPHONE_RGB) > 20
    page.get_by_role("radio", name="30 days").check()
    page.get_by_role("radio", name="By day").check()
    expect(page.locator("#chart-title")).to_have_text("Clicks by day, last 30 days")
    expect(page.locator("#detail [data-slot=range-totals]")).to_have_text(re.compile(r"^5 clicks by 3 unique"))
    expect(tiles.locator("[data-slot=visitors-range]")).to_have_text("last 30 days")

    # the CSV links download CSV, with the browser's credentials
    stats_csv = page.request.get(page.locator("#detail [data-slot=stats-csv]").get_attribute("href") or "")
    assert stats_csv.ok and stats_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in stats_csv.headers["content-disposition"]
    csv_lines = stats_csv.text().strip().splitlines()
    assert len(csv_lines) == 31  # a header and 30 days
    assert csv_lines[0].endswith(",unique_visitors,range_unique_visitors") and csv_lines[-1].endswith(",3,3")
    list_csv = page.request.get(csv_link.get_attribute("href") or "")
    assert list_csv.ok and str(campaign_id) in list_csv.text()

    page.get_by_role("radio", name="7 days").check()
    expect(page.locator("#chart-title")).to_have_text("Clicks by day, last 7 days")
    # set once the range's stats have come and the chart is drawn again
    expect(tiles.locator("[data-slot=visitors-range]")).to_have_text("last 7 days")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    # nothing wider than a phone, once the chart has followed the window's new width (polled from here:
    # page.wait_for_function evaluates its predicate with eval, which the page's policy forbids)
    for _ in range(100):
        if page.evaluate("document.documentElement.scrollWidth") <= 390:
            break
        page.wait_for_timeout(100)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SCREENSHOT.with_name("dashboard-phone.png")), full_page=True)


def test_edit_and_delete_through_the_forms(page: Page, stack: Stack) -> None:
    created = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10, json={
        "redirect_url": "https://example.com/before", "platforms": ["Android"]}).json()
    page.goto(f"/admin/#campaign/{created['id']}")
    expect(page.locator("#detail-body h2")).to_have_text("https://example.com/before")

    page.get_by_text("Edit campaign", exact=True).click()
    form = page.locator("#detail form")
    form.get_by_label("Redirect URL").fill("ftp://example.com/")
    form.get_by_role("button", name="Save changes").click()
    expected = requests.put(f"{stack.url}/admin/campaigns/{created['id']}", auth=AUTH, timeout=10,
                            json={"redirect_url": "ftp://example.com/"}).json()["msg"]
    expect(page.locator("#edit-error")).to_have_text(expected)

    form.get_by_label("Redirect URL").fill("https://example.com/after")
    form.get_by_label("iPhone", exact=True).check()
    form.get_by_label(FORWARD_QUERY).check()
    form.get_by_role("button", name="Save changes").click()
    expect(page.locator("#detail-body h2")).to_have_text("https://example.com/after")
    expect(page.locator("#link-IPhone")).to_have_value(f"{stack.url}/track/{created['id']}?platform=IPhone")
    stored = requests.get(f"{stack.url}/admin/campaigns/{created['id']}", auth=AUTH, timeout=10).json()
    assert (stored["redirect_url"], stored["platforms"], stored["forward_query"]) == (
        "https://example.com/after", ["Android", "IPhone"], True)

    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete campaign").click()
    expect(page.locator(f'#campaigns tr[data-id="{created["id"]}"]')).to_have_count(0)
    expect(page.get_by_text(f"Campaign #{created['id']} deleted.")).to_be_visible()
    assert requests.get(f"{stack.url}/admin/campaigns/{created['id']}", auth=AUTH, timeout=10).status_code == 404


def test_an_edit_or_delete_after_a_change_made_elsewhere_is_refused_and_the_page_offers_a_reload(
    page: Page, stack: Stack
) -> None:
    created = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10, json={
        "redirect_url": "https://example.com/as-opened", "platforms": ["Android"]}).json()
    path = f"{stack.url}/admin/campaigns/{created['id']}"
    page.goto(f"/admin/#campaign/{created['id']}")
    expect(page.locator("#detail-body h2")).to_have_text("https://example.com/as-opened")
    # Someone else changes it through the API, after the page has read it.
    theirs = requests.put(path, auth=AUTH, timeout=10, json={"redirect_url": "https://example.com/theirs"})
    assert theirs.status_code == 200

    page.get_by_text("Edit campaign", exact=True).click()
    form = page.locator("#detail form")
    form.get_by_label("Redirect URL").fill("https://example.com/mine")
    form.get_by_role("button", name="Save changes").click()
    edit_error = page.locator("#edit-error")
    expect(edit_error).to_contain_text("Not saved: this campaign was changed elsewhere after you opened it. "
                                       "Reload it to see the change, then decide again.")
    expect(edit_error.get_by_role("button", name="Reload the campaign")).to_be_focused()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT.with_name("dashboard-changed-elsewhere.png")), full_page=True)
    assert requests.get(path, auth=AUTH, timeout=10).json()["redirect_url"] == "https://example.com/theirs"

    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete campaign").click()
    expect(page.locator("#detail [data-slot=delete-error]")).to_contain_text(
        "Not deleted: this campaign was changed elsewhere after you opened it.")
    assert requests.get(path, auth=AUTH, timeout=10).status_code == 200
    page.get_by_role("button", name="Pause", exact=True).click()
    expect(page.locator("#detail [data-slot=pause-error]")).to_contain_text(
        "Not paused: this campaign was changed elsewhere after you opened it.")
    assert requests.get(path, auth=AUTH, timeout=10).json()["status"] == "active"

    # Reloaded, the page shows their change, and an edit made on it is saved.
    edit_error.get_by_role("button", name="Reload the campaign").click()
    expect(page.locator("#detail-body h2")).to_have_text("https://example.com/theirs")
    expect(page.locator("#detail [data-slot=edit-status]")).to_have_text("Reloaded: this is the campaign as it is now.")
    expect(page.locator(f'#campaigns tr[data-id="{created["id"]}"] .host')).to_have_text("example.com")
    form = page.locator("#detail form")
    expect(form.get_by_label("Redirect URL")).to_have_value("https://example.com/theirs")
    form.get_by_label("Redirect URL").fill("https://example.com/mine")
    form.get_by_role("button", name="Save changes").click()
    expect(page.locator("#detail-body h2")).to_have_text("https://example.com/mine")
    assert requests.get(path, auth=AUTH, timeout=10).json()["redirect_url"] == "https://example.com/mine"


def local_minute(moment: datetime) -> str:
    """A moment as a datetime-local input takes it, in the browser's zone."""
    return moment.astimezone(ZoneInfo(TIMEZONE)).strftime("%Y-%m-%dT%H:%M")


def test_pause_resume_dates_cap_fallback_and_inactive_clicks_through_the_page(page: Page, stack: Stack) -> None:
    page.goto("/admin/")
    page.get_by_text("New campaign", exact=True).click()
    form = page.locator("#create-form")
    form.get_by_label("Redirect URL").fill("https://example.com/lifecycle")
    form.get_by_label("iPhone", exact=True).uncheck()
    form.get_by_label("Windows Phone", exact=True).uncheck()
    form.get_by_text("Status, dates, cap and fallback (optional)").click()
    form.get_by_label("Fallback URL", exact=True).fill("https://example.com/fallback")
    form.get_by_role("button", name="Create campaign").click()
    expect(page.locator("#detail-body h2")).to_have_text("https://example.com/lifecycle")
    campaign_id = int(page.evaluate("location.hash").removeprefix("#campaign/"))
    path = f"{stack.url}/admin/campaigns/{campaign_id}"
    assert requests.get(path, auth=AUTH, timeout=10).json()["fallback_url"] == "https://example.com/fallback"
    lifecycle = page.locator("#detail [data-slot=lifecycle]")
    expect(lifecycle.locator(".badge")).to_have_text("Active")

    # dates that end before they start, a cap that is no number: the server's message, nothing saved
    page.get_by_text("Edit campaign", exact=True).click()
    form = page.locator("#detail form")
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(days=1)
    end = start + timedelta(days=400)
    form.get_by_label("Start", exact=True).fill(local_minute(end))
    form.get_by_label("End", exact=True).fill(local_minute(start))
    form.get_by_role("button", name="Save changes").click()
    expect(page.locator("#edit-error")).to_contain_text("'ends_at' must be after 'starts_at'")
    form.get_by_label("Click cap", exact=True).fill("a thousand")
    form.get_by_label("Start", exact=True).fill(local_minute(start))
    form.get_by_label("End", exact=True).fill(local_minute(end))
    form.get_by_role("button", name="Save changes").click()
    expect(page.locator("#edit-error")).to_contain_text("'max_clicks' must be a whole number")
    assert requests.get(path, auth=AUTH, timeout=10).json()["starts_at"] is None
    form.get_by_label("Click cap", exact=True).fill("1000")
    form.get_by_role("button", name="Save changes").click()
    expect(lifecycle).to_contain_text("at most 1,000 clicks")
    expect(lifecycle).to_contain_text("Clicks it cannot count go to https://example.com/fallback")
    stored = requests.get(path, auth=AUTH, timeout=10).json()
    assert (stored["starts_at"], stored["ends_at"], stored["max_clicks"], stored["status"]) == (
        start.strftime("%Y-%m-%dT%H:%M:00.000000Z"), end.strftime("%Y-%m-%dT%H:%M:00.000000Z"), 1000, "active")

    # paused with the button: its links go to its fallback, and the clicks show as inactive
    page.get_by_role("button", name="Pause", exact=True).click()
    expect(lifecycle.locator(".badge")).to_have_text("Paused")
    expect(page.locator(f'#campaigns tr[data-id="{campaign_id}"] .badge.state')).to_have_text("Paused")
    assert requests.get(path, auth=AUTH, timeout=10).json()["status"] == "paused"
    link = page.locator("#link-Android").input_value()
    for url in (link, link, link, link.replace("platform=Android", "platform=IPhone")):
        answer = requests.get(url, allow_redirects=False, timeout=10)
        assert answer.status_code == 307 and answer.headers["Location"] == "https://example.com/fallback"
    assert requests.get(f"{stack.url}/tasks/update_stats", auth=AUTH, timeout=60).status_code == 200
    page.reload()
    tiles = page.locator("#detail .tiles")
    expect(tiles.locator('dd[data-field="inactive_click_count"]')).to_have_text("4")
    expect(tiles.locator('dd[data-field="click_count"]')).to_have_text("0")
    expect(page.locator("#detail [data-slot=inactive-split]")).to_have_text(
        "Inactive clicks by platform: Android 3, iPhone 1.")
    expect(page.locator("#detail [data-slot=range-totals]")).to_have_text(
        re.compile(r"^0 clicks by 0 unique visitors, 0 bot clicks and 4 inactive"))
    expect(tiles.locator("[data-slot=range-visitors]")).to_have_text("0")  # clicks counted apart are no visitors
    expect(page.locator("#detail .chart canvas")).to_be_visible()
    assert count_pixels(page, INACTIVE_RGB) > 20  # the inactive clicks' own line
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT.with_name("dashboard-lifecycle.png")), full_page=True)

    page.get_by_role("button", name="Resume", exact=True).click()
    expect(lifecycle.locator(".badge")).to_have_text("Active")
    assert requests.get(path, auth=AUTH, timeout=10).json()["status"] == "active"

    # archived through the form: out of the list, until archived campaigns are asked for
    page.get_by_text("Edit campaign", exact=True).click()
    page.locator("#detail form").get_by_label("Status", exact=True).select_option("archived")
    page.locator("#detail form").get_by_role("button", name="Save changes").click()
    expect(lifecycle.locator(".badge")).to_have_text("Archived")
    row = page.locator(f'#campaigns tr[data-id="{campaign_id}"]')
    expect(row).to_have_count(0)
    page.get_by_label("Show archived campaigns").check()
    expect(row.locator(".badge.state")).to_have_text("Archived")
    assert "status=active%2Cpaused%2Carchived" in (page.locator("#list-csv").get_attribute("href") or "")


def test_the_list_pages_through_every_campaign_newest_first(page: Page, stack: Stack) -> None:
    before = len(requests.get(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10).json())
    ids = [requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10, json={
        "redirect_url": f"https://example.com/page/{n}", "platforms": ["IPhone"]}).json()["id"] for n in range(25)]
    page.goto("/admin/")
    rows = page.locator("#campaigns tbody tr")
    expect(rows).to_have_count(20)  # one page
    page.get_by_role("button", name="Show more campaigns").click()
    expect(rows).to_have_count(25 + before)
    expect(page.get_by_role("button", name="Show more campaigns")).to_be_hidden()
    shown = [int(row_id) for row_id in rows.evaluate_all("rows => rows.map(row => row.dataset.id)")]
    assert shown[:25] == ids[::-1]


# -- another origin ------------------------------------------------------------------------------

# What a page of another origin can make a browser send to the admin without asking it first: a form
# (text/plain, its one field's name and value joined by "=" into a body that parses as JSON), fetch in
# no-cors mode and a beacon; and what it can only send once a CORS preflight allows it: JSON, PUT, DELETE.
ATTACK_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Not the admin</title>
<form id="form" method="post" enctype="text/plain" action="ADMIN/admin/campaigns">
  <input type="hidden" name='{"redirect_url":"https://evil.example/form?x' value='y","platforms":["Android"]}'>
</form>
<script>
const admin = "ADMIN";
const campaign = `${admin}/admin/campaigns/TARGET`;
const create = JSON.stringify({redirect_url: "https://evil.example/fetch", platforms: ["Android"]});
const change = JSON.stringify({redirect_url: "https://evil.example/changed", platforms: ["WindowsPhone"]});
const send = (url, init) => fetch(url, {credentials: "include", ...init})
  .then((answer) => `${answer.type} ${answer.status}`, (error) => `refused by the browser (${error.name})`);
window.attempts = (async () => ({
  read: await send(`${admin}/admin/campaigns`, {mode: "no-cors"}),
  post_text: await send(`${admin}/admin/campaigns`, {method: "POST", mode: "no-cors",
                                                     headers: {"Content-Type": "text/plain"}, body: create}),
  post_form: await send(`${admin}/admin/campaigns`, {method: "POST", mode: "no-cors",
                                                     body: new URLSearchParams({x: create})}),
  post_json: await send(`${admin}/admin/campaigns`, {method: "POST", headers: {"Content-Type": "application/json"},
                                                     body: create}),
  put: await send(campaign, {method: "PUT", headers: {"Content-Type": "application/json"}, body: change}),
  put_text: await send(campaign, {method: "PUT", body: change}),
  delete: await send(campaign, {method: "DELETE"}),
  beacon: navigator.sendBeacon(`${admin}/admin/campaigns`, new Blob([create], {type: "text/plain"})),
}))();
</script>
"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_origin(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A tiny http.server on another port of this machine, serving the files of a folder."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class Sent(NamedTuple):
    method: str
    path: str
    status: int | None  # None: never answered (the browser did not send it)
    credentials: bool  # whether it carried an Authorization header
    kind: str  # CDP's resource type: Document (a navigation), Fetch, Ping (a beacon), Preflight, ...


class Wire:
    """Each request the browser sends from now on, as its network stack saw it (through CDP): the headers
    it sent and the status the server answered, also where the page itself is not let see the answer
    (another origin's answer without CORS, or with Cross-Origin-Resource-Policy: same-origin)."""

    def __init__(self, page: Page) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        session = page.context.new_cdp_session(page)
        session.on("Network.requestWillBeSent", lambda event: self._entry(event).update(
            method=event["request"]["method"], url=event["request"]["url"], kind=event.get("type", "")))
        session.on("Network.requestWillBeSentExtraInfo", lambda event: self._entry(event).update(
            sent={name.lower() for name in event["headers"]}))
        session.on("Network.responseReceivedExtraInfo", lambda event: self._entry(event).update(
            status=event["statusCode"]))
        session.send("Network.enable")

    def _entry(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.seen.setdefault(event["requestId"], {})

    def to(self, origin: str) -> list[Sent]:
        return [Sent(r["method"], urlsplit(r["url"]).path, r.get("status"), "authorization" in r.get("sent", ()),
                     r["kind"]) for r in self.seen.values() if r.get("url", "").startswith(origin + "/")]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])  # same site on another port; another site
def test_a_page_of_another_origin_cannot_change_anything(
    browser: Browser, stack: Stack, other_origin: tuple[Path, int], host: str
) -> None:
    before = requests.post(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10, json={
        "redirect_url": "https://example.com/kept", "platforms": ["Android", "IPhone"]}).json()
    folder, port = other_origin
    (folder / "attack.html").write_text(ATTACK_PAGE.replace("ADMIN", stack.url).replace("TARGET", str(before["id"])))

    # The admin logs in to the dashboard (the browser answers the admin's login prompt, and only the admin's).
    context = browser.new_context(http_credentials={"username": AUTH[0], "password": AUTH[1], "origin": stack.url})
    try:
        page = context.new_page()
        page.goto(f"{stack.url}/admin/")
        expect(page.get_by_role("heading", name="Campaigns", exact=True)).to_be_visible()
        page.wait_for_load_state("networkidle")
        wire = Wire(page)
        page.goto(f"http://{host}:{port}/attack.html")
        attempts = page.evaluate("window.attempts")
        # The form: a top-level navigation to the admin, which refuses it.
        with page.expect_navigation() as navigation:
            page.locator("#form").evaluate("form => form.submit()")
        refused = navigation.value
        assert refused is not None and refused.status == 403
        assert "only the admin's own pages may change anything" in json.loads(refused.text())["msg"]
        page.wait_for_timeout(500)  # the beacon's answer
        sent = wire.to(stack.url)
    finally:
        context.close()

    changes = [request for request in sent if request.method not in ("GET", "HEAD", "OPTIONS")]
    reached = [request for request in changes if request.status is not None]
    assert len(reached) >= 4, sent  # the two no-cors fetches, the beacon and the form
    assert all(request.status == 403 for request in reached), sent
    # A form's navigation carries the credentials the admin logged in with, from any site.
    [form] = [request for request in reached if request.kind == "Document"]
    assert form.credentials, sent
    if host == "127.0.0.1":
        # On the same site every request of the other page carries them (its read is answered 200, though
        # the page may not see it): only the admin can refuse the changes.
        assert Sent("GET", "/admin/campaigns", 200, True, "Fetch") in sent, sent
        assert all(request.credentials for request in reached), sent
    # JSON, PUT and DELETE need the admin's leave first (a CORS preflight), which it never gives: never sent.
    assert all(request.status is None for request in changes if request.method in ("PUT", "DELETE")), sent
    for name in ("post_json", "put", "put_text", "delete"):
        assert attempts[name].startswith("refused by the browser"), attempts
    after = requests.get(f"{stack.url}/admin/campaigns/{before['id']}", auth=AUTH, timeout=10).json()
    assert {**after, "as_of": None} == before  # as_of moves on with any earlier test's drain
    assert not [c for c in requests.get(f"{stack.url}/admin/campaigns", auth=AUTH, timeout=10).json()
                if "evil" in c["redirect_url"]]
