"""/me on a 360 px phone and a 1280 px desktop (headless Chromium against a real gateway):
no horizontal overflow, partners by display_name, times in words. The screenshots are
written to tests/artifacts/ on every run, and to docs/images/ with
LINEWARDEN_UPDATE_DOC_IMAGES=1 (how docs/images/me-360.png and me-1280.png were made)."""

from __future__ import annotations

import http.client
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lwtest import MSISDN_1, ROOT, Gateway, Origin, start_gateway

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ARTIFACTS = ROOT / "tests" / "artifacts"
DOC_IMAGES = ROOT / "docs" / "images"
BILLING = "Acme Games: pay by phone bill"
AGE = "Nightlife Tickets (age check before you buy)"

PARTNERS = f"""
[[partners]]
id = "billing-partner"
display_name = "{BILLING}"
purpose = "billing"
hosts = ["partner.test.evil.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"

[[partners]]
id = "age-partner"
display_name = "{AGE}"
purpose = "age_verification"
hosts = ["pseudo.test", "*.pseudo.test"]
[partners.headers]
X-Subscriber-Pseudonym = "pseudonym"
X-Operator = "operator"
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("me-page"), origin.port, partners=PARTNERS)
    try:
        yield gw
    finally:
        gw.stop()



def browse(gw: Gateway, host: str) -> None:
    """One request from subscriber 1 (127.0.0.1) through the proxy."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.proxy_port, timeout=10)
    try:
        conn.request("GET", f"http://{host}/{secrets.token_hex(4)}", headers={"Host": host})
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@pytest.mark.parametrize("width", [360, 1280])
def test_me_fits_the_screen(gateway: Gateway, chromium: Browser, width: int) -> None:
    for host in ("partner.test.evil.test", "partner.test.evil.test", "a.pseudo.test"):
        browse(gateway, host)
    context = chromium.new_context(java_script_enabled=False,
                                   viewport={"width": width, "height": 800})
    try:
        page = context.new_page()
        response = page.goto(gateway.web + "/me")
        assert response is not None and response.status == 200
        report = page.inner_text("#report")
        assert BILLING in report and AGE in report  # partners by the name people read
        assert "billing-partner" not in report and "age-partner" not in report
        assert "partner.test.evil.test" in report
        assert "times, first today at" in report and "UTC" in report  # times in words
        assert BILLING in page.inner_text("#partner-billing-partner")
        assert MSISDN_1 not in page.content()
        # No horizontal overflow: the page is no wider than the screen, and no element
        # sticks out past the right edge.
        widths = page.evaluate("""() => ({
            scroll: document.documentElement.scrollWidth,
            client: document.documentElement.clientWidth,
            widest: Math.max(...[...document.querySelectorAll('body *')].map(
                e => e.getBoundingClientRect().right)),
        })""")
        assert widths["client"] == width
        assert widths["scroll"] <= widths["client"], widths
        assert widths["widest"] <= widths["client"], widths
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = page.screenshot(full_page=True)
        (ARTIFACTS / f"me-{width}.png").write_bytes(shot)
        if os.environ.get("LINEWARDEN_UPDATE_DOC_IMAGES") == "1":
            DOC_IMAGES.mkdir(parents=True, exist_ok=True)
            (DOC_IMAGES / f"me-{width}.png").write_bytes(shot)
    finally:
        context.close()


def test_display_name_is_optional_and_bounded(tmp_path: Path) -> None:
    from linewarden.config import load_config
    from linewarden.sourcemap import ConfigError, ConfigErrors

    config = tmp_path / "linewarden.toml"
    config.write_text(f'state_dir = "{tmp_path}/s"\n' + PARTNERS)
    partners = {p.id: p.name for p in load_config(str(config)).policy.partners}
    assert partners == {"billing-partner": BILLING, "age-partner": AGE}
    config.write_text(f'state_dir = "{tmp_path}/s"\n'
                      + PARTNERS.replace(BILLING, "x" * 81))
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        load_config(str(config))
    assert "display_name" in str(info.value) and "linewarden.toml:" in str(info.value)
