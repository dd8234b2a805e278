"""The checker page in real headless Chromium, served by a real `linewarden checker` process.

Later (issue 5, part 2) the same page is visited *through the gateway*; here Chromium itself
adds the identity header, which is what a leaking proxy would do to its request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

# A mid-range Android phone's CSS viewport: the page must read well at this width.
PHONE_WIDTH, PHONE_HEIGHT = 360, 780
MSISDN = "447400900123"


def _context(
    chromium: Browser,
    *,
    java_script_enabled: bool = True,
    extra_http_headers: dict[str, str] | None = None,
) -> BrowserContext:
    return chromium.new_context(
        viewport={"width": PHONE_WIDTH, "height": PHONE_HEIGHT}, device_scale_factor=2,
        is_mobile=True, has_touch=True, java_script_enabled=java_script_enabled,
        extra_http_headers=extra_http_headers,
    )


def test_clean_visit_shows_no_identity_revealed(
    chromium: Browser, checker_url: str, artifacts: Path
) -> None:
    context = _context(chromium)
    page = context.new_page()
    response = page.goto(checker_url)
    assert response is not None and response.status == 200
    assert response.headers["cache-control"] == "no-store"
    verdict = page.inner_text("#verdict")
    assert "No identity revealed" in verdict
    assert page.locator("li.flagged").count() == 0
    # Every header the browser sent is listed, e.g. its User-Agent.
    assert "user-agent" in page.inner_text("ol.headers")
    page.screenshot(path=str(artifacts / "checker-clean.png"), full_page=True)
    context.close()


def test_identity_header_is_flagged_without_javascript(
    chromium: Browser, checker_url: str, artifacts: Path
) -> None:
    context = _context(chromium, java_script_enabled=False,
                       extra_http_headers={"X-Up-Calling-Line-Id": MSISDN})
    page = context.new_page()
    page.goto(checker_url)
    verdict = page.inner_text("#verdict")
    assert "Identity revealed" in verdict
    assert "This site can see your phone number +44 7400 900123" in verdict
    flagged = page.locator("li.flagged")
    assert flagged.count() == 1
    assert "x-up-calling-line-id" in flagged.inner_text()
    assert MSISDN in flagged.inner_text()
    page.screenshot(path=str(artifacts / "checker-identity-flagged.png"), full_page=True)
    context.close()


def test_page_fits_a_phone_screen(chromium: Browser, checker_url: str, artifacts: Path) -> None:
    # A long unbroken value (a cookie, a token) must wrap, not push the page sideways.
    context = _context(chromium, extra_http_headers={"X-Long-Token": "A" * 600})
    page = context.new_page()
    page.goto(checker_url)
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= PHONE_WIDTH
    font_px = float(page.evaluate("getComputedStyle(document.body).fontSize").rstrip("px"))
    assert font_px >= 14
    page.screenshot(path=str(artifacts / "checker-long-value.png"), full_page=True)
    context.close()


def test_script_in_a_header_is_shown_not_run(chromium: Browser, checker_url: str) -> None:
    evil = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
    context = _context(chromium, extra_http_headers={"X-Evil": evil})
    page = context.new_page()
    page.goto(checker_url)
    assert page.title() != "pwned"
    assert evil in page.inner_text("ol.headers")  # shown to the visitor as text
    assert page.locator("script").count() == 0 and page.locator("ol.headers img").count() == 0
    context.close()


def test_json_api_in_the_browser(chromium: Browser, checker_url: str) -> None:
    context = _context(chromium, extra_http_headers={"X-Msisdn": MSISDN})
    page = context.new_page()
    response = page.goto(checker_url + "api/check")
    assert response is not None and response.headers["cache-control"] == "no-store"
    doc = json.loads(page.inner_text("body"))
    assert doc["identity_revealed"] is True
    assert [f["value"] for f in doc["findings"]] == ["+44 7400 900123"]
    context.close()
