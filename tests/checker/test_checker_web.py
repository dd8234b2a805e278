"""The page and the JSON API over ASGI (Starlette's TestClient, no sockets)."""

from __future__ import annotations

import logging
import warnings

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from linewarden.checker import JSON_SCHEMA_VERSION
from linewarden.web.checker import checker_routes, make_checker_app

with warnings.catch_warnings():
    # Starlette 1.x nags about httpx in favour of httpx2; httpx is what the project pins.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

MSISDN = "447400900123"


@pytest.fixture
def client() -> TestClient:
    return TestClient(make_checker_app())


def test_clean_page(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "script-src" not in response.headers["content-security-policy"]  # no scripts at all
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "<h1>No identity revealed</h1>" in html
    assert "<script" not in html
    # The verdict comes before the header list.
    assert html.index('id="verdict"') < html.index('class="headers"')


def test_identity_flagged_in_plain_words(client: TestClient) -> None:
    html = client.get("/", headers={"X-Up-Calling-Line-Id": MSISDN}).text
    assert "<h1>Identity revealed</h1>" in html
    assert "This site can see your phone number +44 7400 900123" in html
    assert '<li class="flagged"><span class="name">x-up-calling-line-id</span>' in html


def test_header_values_are_escaped(client: TestClient) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    html = client.get("/", headers={"X-Evil": evil, "X-MSISDN": f"{MSISDN}<b>"}).text
    assert "<script>" not in html and "<img" not in html
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    assert escaped in html
    assert "447400900123&lt;b&gt;" in html


def test_api_returns_the_same_analysis(client: TestClient) -> None:
    response = client.get("/api/check", headers=[("X-Msisdn", MSISDN), ("Accept", "x/y")])
    assert response.headers["cache-control"] == "no-store"
    assert "access-control-allow-origin" not in response.headers  # no cross-site reads
    doc = response.json()
    assert doc["schema_version"] == JSON_SCHEMA_VERSION
    assert doc["identity_revealed"] is True
    assert doc["revealed"] == ["phone_number"]
    (finding,) = doc["findings"]
    assert finding["header"] == "x-msisdn" and finding["value"] == "+44 7400 900123"
    assert doc["headers"][finding["index"]] == {"name": "x-msisdn", "value": MSISDN,
                                                "flagged": True}


def test_raw_headers_keep_duplicates_and_order(client: TestClient) -> None:
    sent = [("x-b", "1"), ("x-a", "2"), ("x-b", "3")]
    doc = client.get("/api/check", headers=sent).json()
    received = [(h["name"], h["value"]) for h in doc["headers"] if h["name"].startswith("x-")]
    assert received == sent


def test_cross_origin_request_gets_no_cors_grant(client: TestClient) -> None:
    response = client.get("/api/check", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_only_get(client: TestClient) -> None:
    assert client.post("/", content=b"x").status_code == 405
    assert client.head("/").status_code == 200


def test_nothing_is_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client.get("/", headers={"X-Msisdn": MSISDN})
        client.get("/api/check", headers={"X-Msisdn": MSISDN})
    assert MSISDN not in caplog.text


def test_routes_mount_into_a_bigger_app() -> None:
    async def other(_request: object) -> PlainTextResponse:
        return PlainTextResponse("other")

    app = Starlette(routes=[*checker_routes(regions=["DE"]), Route("/other", other)])
    client = TestClient(app)
    assert client.get("/other").text == "other"
    doc = client.get("/api/check", headers={"X-Contact": "0151 23456789"}).json()
    assert doc["findings"][0]["value"] == "+49 1512 3456789"


def test_bad_region_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="UK"):
        checker_routes(regions=["UK"])
