"""Real headless Chromium browsing *through the gateway*, as a subscriber on 127.0.0.1.

  * a non-partner host (it resolves to the checker): "No identity revealed";
  * a partner host that resolves to the checker: the number is flagged;
  * the same partner page with the kill switch tripped: nothing revealed again.
Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from canary_support import (
    ARTIFACTS,
    IDENTITY_HEADER,
    PARTNER_HOST,
    PLAIN_HOST,
    SUBSCRIBER_MSISDN,
    Gateway,
    start_gateway,
)

from lwtest import chromium_browser

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# `<-loopback>` removes Chromium's implicit loopback bypass so even 127.0.0.1 URLs go
# through the proxy.
PROXY_ALL = "--proxy-bypass-list=<-loopback>"
PHONE_WIDTH, PHONE_HEIGHT = 360, 780


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("browser") / "gw")
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def chromium(gw: Gateway) -> Iterator[Browser]:
    with chromium_browser(PROXY_ALL, f"--proxy-server=http://127.0.0.1:{gw.proxy_port}") as b:
        yield b


def _visit(chromium: Browser, url: str, shot: str) -> tuple[Page, str]:
    context = chromium.new_context(viewport={"width": PHONE_WIDTH, "height": PHONE_HEIGHT},
                                   device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    response = page.goto(url)
    assert response is not None and response.status == 200
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    return page, page.inner_text("#verdict")


def test_checker_through_the_gateway_shows_no_identity(chromium: Browser) -> None:
    page, verdict = _visit(chromium, f"http://{PLAIN_HOST}/", "gateway-nonpartner-clean.png")
    assert "No identity revealed" in verdict
    assert page.locator("li.flagged").count() == 0
    headers = page.inner_text("ol.headers").lower()
    assert "via" in headers and "linewarden" in headers  # it did pass the gateway
    page.context.close()


def test_partner_host_shows_the_number_flagged(chromium: Browser) -> None:
    page, verdict = _visit(chromium, f"http://{PARTNER_HOST}/",
                           "gateway-partner-number-flagged.png")
    assert "Identity revealed" in verdict
    assert "This site can see your phone number +44 7400 900123" in verdict
    flagged = page.locator("li.flagged")
    assert flagged.count() == 1
    assert IDENTITY_HEADER.lower() in flagged.inner_text().lower()
    assert SUBSCRIBER_MSISDN in flagged.inner_text()
    page.context.close()


def test_loopback_url_of_the_gateway_is_refused_by_the_proxy(chromium: Browser,
                                                             gw: Gateway) -> None:
    """The browser sends even 127.0.0.1 URLs through the proxy (`<-loopback>`), and the
    proxy is no way into the gateway (issue 15): its own web port answers 403 from the
    proxy, never the page."""
    context = chromium.new_context()
    page = context.new_page()
    response = page.goto(f"{gw.web}/")
    assert response is not None and response.status == 403
    assert "does not connect to that destination (gateway)" in page.inner_text("body")
    context.close()


def test_tripped_switch_stops_the_partner_disclosure(chromium: Browser, gw: Gateway) -> None:
    gw.admin("POST", "/admin/killswitch/trip", {"reason": "browser drill", "by": "tests"})
    try:
        page, verdict = _visit(chromium, f"http://{PARTNER_HOST}/",
                               "gateway-partner-killswitch-tripped.png")
        assert "No identity revealed" in verdict
        assert page.locator("li.flagged").count() == 0
        page.context.close()
    finally:
        gw.admin("POST", "/admin/killswitch/clear", {"reason": "drill over", "by": "tests"})
