"""No client-sent identity header ever reaches an origin (PRODUCT.md invariant 2).

Every assertion is on the raw bytes the origin read off its socket.
"""

from __future__ import annotations

import pytest
from wire import RawClient, curl, curl_ok, exchange, marker

from lwtest import MSISDN_1, Gateway, Origin

FORGED = "447700900999"  # the number a fraudster wants the partner to bill

# 44 spellings: the reference names in several cases, `_` and `.` aliases, suffix matches,
# the partners' own header names, and other RFC 9110 tchar aliases that back ends fold.
SPELLINGS = [
    "X-MSISDN", "x-msisdn", "X-Msisdn", "X_MSISDN", "x_msisdn", "X.MSISDN", "x.msisdn",
    "MSISDN", "msisdn", "Msisdn", "XMSISDN", "X--MSISDN", "X-Up-Calling-Line-Id",
    "x-up-calling-line-id", "X-UP-CALLING-LINE-ID", "X_UP_CALLING_LINE_ID",
    "X.Up.Calling.Line.Id", "X-Up_Calling-Line_Id", "X-Nokia-MSISDN", "X-WAP-MSISDN",
    "X-H3G-MSISDN", "X-UP-SUBNO", "X-IMSI", "X-Nokia-IMSI", "X-UIDH", "X-ACR", "X-VF-ACR",
    "X-HTS-CLID", "X-NX-CLID", "X-WAP-3GPP-MSISDN", "X-Wap-Network-Client-Msisdn",
    "User-Identity-Forward-Msisdn", "X-Forwarded-MSISDN", "X-IMEI", "X-ATT-DeviceId",
    "X-Subscriber-Id", "X-Jinny-CID", "X-Orange-Id", "X-Access-Subnym",
    "X-Up-Vodacomgw-Subid", "Foo-Calling-Line", "X-Subscriber-Pseudonym", "X-Operator",
    "X~MSISDN", "X!MSISDN", "X*Msisdn",
]


def test_at_least_thirty_spellings() -> None:
    assert len(set(SPELLINGS)) >= 30


@pytest.mark.parametrize("name", SPELLINGS)
@pytest.mark.parametrize("host", ["partner.test", "other.test"])
def test_forged_spelling_never_reaches_origin(gateway: Gateway, origin: Origin, name: str,
                                              host: str) -> None:
    m = marker()
    curl_ok(gateway.proxy, f"http://{host}/{m}", "-H", f"{name}: {FORGED}")
    [rec] = origin.with_marker(m)
    assert FORGED.encode() not in rec.raw
    assert name.encode() not in rec.raw or name.lower() == "x-up-calling-line-id"
    if host == "partner.test":  # the partner still gets the real number, exactly once
        assert rec.values("X-Up-Calling-Line-Id") == [MSISDN_1]


def test_all_spellings_at_once_and_duplicated(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    args = [arg for name in SPELLINGS for arg in ("-H", f"{name}: {FORGED}")]
    args += ["-H", f"X-MSISDN: {FORGED}", "-H", f"X-MSISDN: {FORGED}"]
    curl_ok(gateway.proxy, f"http://partner.test/{m}", *args)
    [rec] = origin.with_marker(m)
    assert FORGED.encode() not in rec.raw
    assert rec.values("X-Up-Calling-Line-Id") == [MSISDN_1]


def test_unbound_client_forgery_is_stripped_too(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    curl_ok(gateway.proxy, f"http://partner.test/{m}", "-H", f"X-Up-Calling-Line-Id: {FORGED}",
            "-H", f"X_MSISDN: {FORGED}", interface="127.0.0.9")
    [rec] = origin.with_marker(m)
    assert FORGED.encode() not in rec.raw
    assert rec.values("X-Up-Calling-Line-Id") == []


def test_transparent_mode_forgery_is_stripped(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    curl_ok(None, f"{gateway.proxy}/{m}", "-H", "Host: partner.test",
            "-H", f"X-Up-Calling-Line-Id: {FORGED}", "-H", f"x.msisdn: {FORGED}")
    [rec] = origin.with_marker(m)
    assert FORGED.encode() not in rec.raw
    assert rec.values("X-Up-Calling-Line-Id") == [MSISDN_1]


def test_connection_nominated_identity_header_is_dropped(gateway: Gateway,
                                                         origin: Origin) -> None:
    m = marker()
    curl_ok(gateway.proxy, f"http://other.test/{m}", "-H", "Connection: X-Innocent",
            "-H", f"X-Innocent: {FORGED}")
    [rec] = origin.with_marker(m)
    assert FORGED.encode() not in rec.raw


def test_obs_fold_is_rejected(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    data, closed = exchange(gateway.proxy_port, (
        f"GET http://partner.test/{m} HTTP/1.1\r\nHost: partner.test\r\n"
        f"X-Innocent: a\r\n X-MSISDN: {FORGED}\r\n\r\n").encode())
    assert data.startswith(b"HTTP/1.1 400 ")
    assert closed
    assert origin.with_marker(m) == []


def test_obs_fold_of_identity_value_is_rejected(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    data, closed = exchange(gateway.proxy_port, (
        f"GET http://partner.test/{m} HTTP/1.1\r\nHost: partner.test\r\n"
        f"X-MSISDN:\r\n\t{FORGED}\r\n\r\n").encode())
    assert data.startswith(b"HTTP/1.1 400 ")
    assert closed and origin.with_marker(m) == []


def test_identity_in_chunked_trailers_is_dropped(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    with RawClient(gateway.proxy_port) as client:
        client.send((f"POST http://partner.test/{m} HTTP/1.1\r\nHost: partner.test\r\n"
                     f"Transfer-Encoding: chunked\r\nTrailer: X-MSISDN\r\n\r\n"
                     f"5\r\nhello\r\n0\r\nX-MSISDN: {FORGED}\r\nX_Up_Calling_Line_Id: "
                     f"{FORGED}\r\n\r\n").encode())
        resp = client.response()
    assert resp.status == 200
    [rec] = origin.with_marker(m)
    assert FORGED.encode() not in rec.raw
    assert rec.raw.endswith(b"5\r\nhello\r\n0\r\n\r\n")


def test_forgery_on_second_request_of_keep_alive(gateway: Gateway, origin: Origin) -> None:
    m1, m2 = marker(), marker()
    with RawClient(gateway.proxy_port) as client:
        client.send(f"GET http://partner.test/{m1} HTTP/1.1\r\nHost: partner.test\r\n\r\n"
                    .encode())
        assert client.response().status == 200
        client.send((f"GET http://partner.test/{m2} HTTP/1.1\r\nHost: partner.test\r\n"
                     f"X-Up-Calling-Line-Id: {FORGED}\r\nX_MSISDN: {FORGED}\r\n\r\n").encode())
        assert client.response().status == 200
    [rec] = origin.with_marker(m2)
    assert FORGED.encode() not in rec.raw
    assert rec.values("X-Up-Calling-Line-Id") == [MSISDN_1]


def test_forgery_in_pipelined_requests(gateway: Gateway, origin: Origin) -> None:
    marks = [marker() for _ in range(4)]
    hosts = ["partner.test", "other.test", "partner.test", "pseudo.test"]
    batch = b"".join(
        (f"POST http://{host}/{m} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n"
         f"X-MSISDN: {FORGED}\r\nX.Up.Calling.Line.Id: {FORGED}\r\n\r\nabcde").encode()
        for host, m in zip(hosts, marks, strict=True))
    with RawClient(gateway.proxy_port) as client:
        client.send(batch)
        statuses = [client.response().status for _ in marks]
    assert statuses == [200] * 4
    for m, host in zip(marks, hosts, strict=True):
        [rec] = origin.with_marker(m)
        assert FORGED.encode() not in rec.raw
        assert rec.raw.endswith(b"\r\n\r\nabcde")
        assert rec.values("X-Up-Calling-Line-Id") == ([MSISDN_1] if host == "partner.test"
                                                      else [])


def test_reject_alias_option_and_extra_names(gateway_factory, origin: Origin) -> None:
    gw = gateway_factory(proxy_extra="reject_alias_headers = true",
                         extra='[strip]\nextra_names = ["X-Custom-Line"]\n'
                               'extra_suffixes = ["custref"]\n')
    m = marker()
    data, closed = exchange(gw.proxy_port, (f"GET http://other.test/{m} HTTP/1.1\r\n"
                                            f"Host: other.test\r\nX_MSISDN: {FORGED}\r\n\r\n")
                            .encode())
    assert data.startswith(b"HTTP/1.1 400 ") and closed
    assert origin.with_marker(m) == []
    m2 = marker()
    curl_ok(gw.proxy, f"http://other.test/{m2}", "-H", f"X-Custom-Line: {FORGED}",
            "-H", f"X-Billing-CustRef: {FORGED}", "-H", "X-Harmless: kept")
    [rec] = origin.with_marker(m2)
    assert FORGED.encode() not in rec.raw
    assert rec.values("X-Harmless") == ["kept"]


def test_harmless_headers_pass(gateway: Gateway, origin: Origin) -> None:
    """Stripping is targeted: ordinary headers (even 'Accept' ending in 'acr'-like text) pass."""
    m = marker()
    curl_ok(gateway.proxy, f"http://other.test/{m}", "-H", "X-Request-Id: abc",
            "-H", "Cookie: a=b", "-H", "Accept-Language: en")
    [rec] = origin.with_marker(m)
    assert rec.values("X-Request-Id") == ["abc"]
    assert rec.values("Cookie") == ["a=b"]
    assert rec.values("Accept-Language") == ["en"]


def test_proxy_authorization_is_not_forwarded(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    result = curl(gateway.proxy, f"http://other.test/{m}", "-H",
                  "Proxy-Authorization: Basic c2VjcmV0", "-H", "Proxy-Connection: keep-alive",
                  "-H", "Keep-Alive: 5")
    assert result.returncode == 0
    [rec] = origin.with_marker(m)
    assert "proxy-authorization" not in rec.header_names()
    assert "proxy-connection" not in rec.header_names()
    assert "keep-alive" not in rec.header_names()
