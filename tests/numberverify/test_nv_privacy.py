"""/me through a real `linewarden serve` (ledger, profiles, proxy) and headless Chromium.

Subscriber 1 (127.0.0.1, MSISDN_1) browses partner.test (billing-partner, raw number);
subscriber 2 (127.0.0.2, MSISDN_2) browses pseudo.test (age-partner). Chromium connects
from 127.0.0.1, so it is subscriber 1: its /me lists billing-partner and nothing of
subscriber 2; its opt-out stops the header on the very next request through the gateway.
"""

from __future__ import annotations

import http.client
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from lwtest import MSISDN_1, MSISDN_2, Gateway, Origin, start_gateway

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
HEADER = "x-up-calling-line-id"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("nv-privacy")
    profiles = directory / "profiles.csv"
    profiles.write_text("msisdn,age_verified,opt_out\n")
    gw = start_gateway(directory, origin.port,
                       extra=f'[profiles]\nfile = "{profiles}"\nreload_interval = 0.5\n')
    try:
        yield gw
    finally:
        gw.stop()



def through_gateway(gw: Gateway, origin: Origin, address: str, host: str) -> list[str]:
    """One request from `address` through the proxy; the identity header values the origin
    received on it."""
    marker = secrets.token_hex(8)
    # http.client, because httpx ignores local_address when it talks to a proxy.
    conn = http.client.HTTPConnection("127.0.0.1", gw.proxy_port, timeout=10,
                                      source_address=(address, 0))
    try:
        conn.putrequest("GET", f"http://{host}/{marker}", skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    [received] = origin.with_marker(marker)
    return received.values(HEADER)


def test_no_binding_shows_an_explanation_and_nothing_else(gateway: Gateway,
                                                          origin: Origin) -> None:
    through_gateway(gateway, origin, "127.0.0.1", "partner.test")
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.5"),
                      trust_env=False) as stranger:
        response = stranger.get(gateway.web + "/me")
    assert response.status_code == 200
    assert "cannot recognise you" in response.text
    assert "partner.test" not in response.text and "billing-partner" not in response.text
    assert response.headers["cache-control"] == "no-store"


def test_forms_need_their_csrf_token(gateway: Gateway) -> None:
    form = {"partner": "billing-partner", "action": "stop", "csrf": "1.forged"}
    response = httpx.post(gateway.web + "/me/opt-out", data=form, trust_env=False)
    assert response.status_code == 403
    page = httpx.get(gateway.web + "/me", trust_env=False).text
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    cross = httpx.post(gateway.web + "/me/opt-out", data={**form, "csrf": token},
                       headers={"Sec-Fetch-Site": "cross-site"}, trust_env=False)
    assert cross.status_code == 403
    # The token is bound to the subscriber's address: another subscriber cannot use it.
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"),
                      trust_env=False) as other:
        assert other.post(gateway.web + "/me/opt-out",
                          data={**form, "csrf": token}).status_code == 403
    assert "stopped" not in httpx.get(gateway.web + "/me", trust_env=False).text.split(
        "Stop sharing</h2>", 1)[1].split("Stop sharing with everyone")[0].replace(
        "Stop sharing", "")


def test_privacy_page_report_and_opt_out(gateway: Gateway, origin: Origin,
                                         chromium: Browser) -> None:
    assert through_gateway(gateway, origin, "127.0.0.1", "partner.test") == [MSISDN_1]
    assert through_gateway(gateway, origin, "127.0.0.2", "pseudo.test") == []
    assert through_gateway(gateway, origin, "127.0.0.2", "partner.test") == [MSISDN_2]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    context = chromium.new_context(java_script_enabled=False,
                                   viewport={"width": 360, "height": 780})
    page = context.new_page()
    response = page.goto(gateway.web + "/me")
    assert response is not None and response.status == 200
    report = page.inner_text("#report")
    assert "billing-partner" in report and "partner.test" in report
    assert "the phone number itself" in report
    # Subscriber 2's visit to pseudo.test (age-partner) is theirs, not shown here.
    assert "age-partner" not in report and "pseudo.test" not in report
    assert MSISDN_1 not in page.content()  # the page masks the number too
    page.screenshot(path=str(ARTIFACTS / "me-report.png"), full_page=True)

    page.click("#partner-billing-partner button")
    page.wait_for_selector("#done")
    assert "stopped" in page.inner_text("#partner-billing-partner")
    assert "allowed" in page.inner_text("#partner-age-partner")
    page.screenshot(path=str(ARTIFACTS / "me-opted-out.png"), full_page=True)
    context.close()

    # The next request through the gateway goes without the number; the other subscriber
    # is unaffected.
    assert through_gateway(gateway, origin, "127.0.0.1", "partner.test") == []
    assert through_gateway(gateway, origin, "127.0.0.2", "partner.test") == [MSISDN_2]
    profile = Path(gateway.directory / "profiles.csv").read_text()
    assert f"{MSISDN_1},,billing-partner" in profile

    # Allow again, then stop everything.
    token_page = httpx.get(gateway.web + "/me", trust_env=False).text
    token = token_page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    allow = httpx.post(gateway.web + "/me/opt-out", trust_env=False,
                       data={"csrf": token, "partner": "billing-partner", "action": "allow"})
    assert allow.status_code == 303
    assert through_gateway(gateway, origin, "127.0.0.1", "partner.test") == [MSISDN_1]
    stop_all = httpx.post(gateway.web + "/me/opt-out", trust_env=False,
                          data={"csrf": token, "partner": "*", "action": "stop"})
    assert stop_all.status_code == 303
    assert through_gateway(gateway, origin, "127.0.0.1", "partner.test") == []
    assert "all-stopped" in httpx.get(gateway.web + "/me", trust_env=False).text
