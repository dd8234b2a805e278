"""Partner hosts get exactly their claims; every other host gets none (real curl, real sockets)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

import pytest
from wire import RawClient, curl, curl_ok, exchange, marker

from linewarden.names import DEFAULT_IDENTITY_NAMES
from lwtest import MSISDN_1, MSISDN_2, Gateway, Origin

IDENTITY_HEADERS = ("x-up-calling-line-id", "x-subscriber-pseudonym", "x-operator")


def identity_in(raw: bytes) -> list[str]:
    """Identity-looking header names in a raw request (loose match, plus our own headers)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    found = []
    for line in head.split(b"\r\n")[1:]:
        name = line.split(b":", 1)[0].decode("latin-1")
        if DEFAULT_IDENTITY_NAMES.is_identity(name) or name.lower() in IDENTITY_HEADERS:
            found.append(name)
    return found


def expected_pseudonym(partner_id: str, msisdn: str) -> str:
    key = hmac.digest(b"test-pseudonym-secret", b"linewarden/pseudonym/v1/" + partner_id.encode(),
                      "sha256")
    digest = hmac.digest(key, msisdn.encode(), "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def only(origin: Origin, m: str):
    found = origin.with_marker(m)
    assert len(found) == 1, f"origin saw {len(found)} requests with {m}"
    return found[0]


def test_partner_gets_exactly_the_configured_header(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    body = curl_ok(gateway.proxy, f"http://partner.test/{m}")
    rec = only(origin, m)
    assert rec.values("X-Up-Calling-Line-Id") == [MSISDN_1]
    assert identity_in(rec.raw) == ["X-Up-Calling-Line-Id"]
    assert rec.values("host") == ["partner.test"]
    assert body == rec.raw  # the client sees what the origin saw, byte for byte


def test_second_subscriber_gets_its_own_number(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    curl_ok(gateway.proxy, f"http://partner.test/{m}", interface="127.0.0.2")
    rec = only(origin, m)
    assert rec.values("X-Up-Calling-Line-Id") == [MSISDN_2]
    assert MSISDN_1.encode() not in rec.raw


def test_pseudonym_partner_gets_pseudonym_and_operator_never_the_number(
        gateway: Gateway, origin: Origin) -> None:
    m1, m2 = marker(), marker()
    curl_ok(gateway.proxy, f"http://pseudo.test/{m1}")
    curl_ok(gateway.proxy, f"http://a.pseudo.test/{m2}", interface="127.0.0.2")
    r1, r2 = only(origin, m1), only(origin, m2)
    assert r1.values("X-Subscriber-Pseudonym") == [expected_pseudonym("age-partner", MSISDN_1)]
    assert r2.values("X-Subscriber-Pseudonym") == [expected_pseudonym("age-partner", MSISDN_2)]
    assert r1.values("X-Operator") == ["234-10"]
    for rec in (r1, r2):
        assert MSISDN_1.encode() not in rec.raw and MSISDN_2.encode() not in rec.raw
        assert sorted(identity_in(rec.raw)) == ["X-Operator", "X-Subscriber-Pseudonym"]


@pytest.mark.parametrize("host", [
    "other.test", "evil.test", "partner.test.evil.test", "xn--prtner-2ua.test",
])
def test_non_partner_hosts_get_no_identity(gateway: Gateway, origin: Origin, host: str) -> None:
    m = marker()
    curl_ok(gateway.proxy, f"http://{host}/{m}")
    rec = only(origin, m)
    assert identity_in(rec.raw) == []
    assert MSISDN_1.encode() not in rec.raw


def test_substring_in_path_or_query_does_not_match(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    curl_ok(gateway.proxy, f"http://evil.test/partner.test/{m}?h=partner.test")
    assert identity_in(only(origin, m).raw) == []


def test_ip_literal_gets_no_identity(gateway_factory: Callable[..., Gateway],
                                     origin: Origin) -> None:
    """No partner lists 127.0.0.1: never a reverse lookup to find partner.test. (Loopback is
    refused by default: this gateway allows it, to reach the test origin by its literal.)"""
    gw = gateway_factory(proxy_extra='allow_destinations = ["127.0.0.1/32"]')
    m = marker()
    curl_ok(gw.proxy, f"http://127.0.0.1:{origin.port}/{m}")
    assert identity_in(only(origin, m).raw) == []


@pytest.mark.parametrize("host", ["PARTNER.TEST", "Partner.Test", "partner.test."])
def test_case_and_trailing_dot_still_match(gateway: Gateway, origin: Origin, host: str) -> None:
    m = marker()
    result = curl(gateway.proxy, f"http://{host}/{m}", "--fail-with-body")
    assert result.returncode == 0, result.stderr
    assert only(origin, m).values("X-Up-Calling-Line-Id") == [MSISDN_1]


def test_userinfo_in_uri_is_refused(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    data, closed = exchange(gateway.proxy_port,
                            f"GET http://partner.test@evil.test/{m} HTTP/1.1\r\n"
                            f"Host: evil.test\r\n\r\n".encode())
    assert data.startswith(b"HTTP/1.1 400 ")
    assert closed
    assert origin.with_marker(m) == []


def test_absolute_form_uri_wins_over_host_header(gateway: Gateway, origin: Origin) -> None:
    """RFC 9112 §3.2.2: a proxy uses the URI's authority; a lying Host cannot pull identity."""
    m = marker()
    with RawClient(gateway.proxy_port) as client:
        client.send(f"GET http://evil.test/{m} HTTP/1.1\r\nHost: partner.test\r\n\r\n".encode())
        assert client.response().status == 200
    rec = only(origin, m)
    assert rec.values("host") == ["evil.test"]
    assert identity_in(rec.raw) == []


def test_transparent_mode_uses_host(gateway: Gateway, origin: Origin) -> None:
    m1, m2 = marker(), marker()
    curl_ok(None, f"{gateway.proxy}/{m1}", "-H", "Host: partner.test")
    curl_ok(None, f"{gateway.proxy}/{m2}", "-H", "Host: other.test", interface="127.0.0.2")
    assert only(origin, m1).values("X-Up-Calling-Line-Id") == [MSISDN_1]
    assert identity_in(only(origin, m2).raw) == []


def test_transparent_host_with_userinfo_is_refused(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    data, closed = exchange(gateway.proxy_port,
                            f"GET /{m} HTTP/1.1\r\nHost: partner.test@evil.test\r\n\r\n".encode())
    assert data.startswith(b"HTTP/1.1 400 ")
    assert closed and origin.with_marker(m) == []


def test_unbound_client_gets_no_identity(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    curl_ok(gateway.proxy, f"http://partner.test/{m}", interface="127.0.0.9")
    rec = only(origin, m)
    assert identity_in(rec.raw) == []


def test_via_is_added_and_loop_is_refused(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    curl_ok(gateway.proxy, f"http://other.test/{m}")
    assert only(origin, m).values("via") == ["1.1 linewarden"]
    m2 = marker()
    result = curl(gateway.proxy, f"http://other.test/{m2}", "-H", "Via: 1.1 linewarden",
                  "-o", "/dev/null", "-w", "%{http_code}")
    assert result.stdout == b"508"
    assert origin.with_marker(m2) == []


def test_pseudonyms_are_not_the_number_hash(gateway: Gateway, origin: Origin) -> None:
    """The pseudonym is keyed: a plain hash of the number does not reveal it."""
    m = marker()
    curl_ok(gateway.proxy, f"http://pseudo.test/{m}")
    value = only(origin, m).values("X-Subscriber-Pseudonym")[0]
    plain = base64.urlsafe_b64encode(hashlib.sha256(MSISDN_1.encode()).digest()).rstrip(b"=")
    assert value.encode() != plain
