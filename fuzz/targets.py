"""Fuzz targets with their oracles, importable without atheris (the tests run them over a
seed corpus; `fuzz/run.py` drives them with atheris for a bounded time).

decide_target: raw bytes -> httptools (as proxy/server.py feeds it) -> decide(). Oracles:
  no exception; a forwarded request carries no client-sent identity-looking or alias header,
  no CR/LF/NUL in any value, one Host, never both Content-Length and Transfer-Encoding;
  identity only toward a host the policy matches, and only the bound subscriber's.
radius_target: raw bytes -> the listener's receive path (framing, authenticator, pyrad
  decoding, event checks). Oracles: only `Rejected` escapes; an accepted event names a
  valid address and a possible MSISDN.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import re
from typing import Any

import httptools

from linewarden.bindings import Binding
from linewarden.bindings.memory import MemoryStore
from linewarden.bindings.radius import LANES, ListenerSettings, RadiusListener, Rejected
from linewarden.claims import Secrets
from linewarden.decide import RequestHead, Rules, Settings, decide
from linewarden.identifiers import is_possible_msisdn
from linewarden.policy.load import parse_policy

MSISDN = "447400900123"
POLICY = """
[[partners]]
id = "billing"
purpose = "billing"
hosts = ["partner.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"

[[partners]]
id = "age"
purpose = "age_verification"
hosts = ["*.pseudo.test"]
paths = ["/billing"]
[partners.headers]
X-Subscriber-Pseudonym = "pseudonym"
"""
PARTNER_HEADERS = {b"x-up-calling-line-id", b"x-subscriber-pseudonym"}
RULES = Rules(parse_policy(POLICY)[0],
              Settings(secrets=Secrets(pseudonym_secret=b"p", ledger_key=b"l",
                                       operator="234-10")))
BINDING = Binding(ip="127.0.0.1", msisdn=MSISDN)
# PRODUCT.md's loose rule, written apart from linewarden.names: the suffixes, and the
# reference names that no suffix covers (matched whole).
_IDENTITY = re.compile(
    rb"(callinglineid|callingline|msisdn|subno|subid|subscriberid|imsi|imei|clid|uidh|acr)$"
    rb"|^(xorangeid|xaccesssubnym|xjinnycid|xh3gpartyid|xnokiaalias|xattdeviceid)$")
_SAFE_NAME = re.compile(rb"^[A-Za-z0-9-]+$")


class _Collect:
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_head = True

    def on_message_begin(self) -> None:
        self.url, self.headers, self.in_head = b"", [], True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        p = self.parser
        self.heads.append(RequestHead(p.get_method(), self.url, p.get_http_version(),
                                      self.headers))


def parse_heads(data: bytes) -> list[RequestHead]:
    sink = _Collect()
    parser = httptools.HttpRequestParser(sink)
    sink.parser = parser  # type: ignore[attr-defined]
    with contextlib.suppress(httptools.HttpParserError, httptools.HttpParserUpgrade):
        parser.feed_data(data)
    return sink.heads


def check_decision(head: RequestHead, bound: bool) -> None:
    d = decide(head, BINDING if bound else None, RULES, switch_tripped=False, now=1e9,
               nonce=b"n" * 16)
    if not d.forwarded:
        assert 400 <= d.status < 600, d.status
        assert not d.identity and d.record is None
        return
    if d.destination is not None and d.destination.mode == "connect":
        # A blind tunnel: no head is forwarded, so nothing to check but that nothing is added
        # (the hostile corpus's CONNECT cases to allowed ports became seeds with issue 15).
        assert not d.identity and d.record is None and not d.headers
        return
    names = [n.lower() for n, _ in d.headers]
    assert names.count(b"host") == 1, names
    assert not (b"content-length" in names and b"transfer-encoding" in names)
    for name, value in d.headers:
        assert _SAFE_NAME.match(name), name  # no alias spelling reaches an origin
        squashed = re.sub(rb"[^a-z0-9]", b"", name.lower())
        assert not _IDENTITY.search(squashed), name
        assert name.lower() not in PARTNER_HEADERS, name
        assert not re.search(rb"[\r\n\x00]", value), (name, value)
    if d.identity:
        assert bound and d.destination is not None and d.record is not None
        host = d.destination.host
        if d.identity[0][0].lower() == b"x-up-calling-line-id":
            assert host == "partner.test" and d.identity == [(b"X-Up-Calling-Line-Id",
                                                            MSISDN.encode())]
        else:
            assert host.endswith(".pseudo.test"), host
        assert MSISDN not in repr(d.record)


def decide_target(data: bytes) -> None:
    bound = bool(data[:1]) and data[0] & 1 == 1
    for head in parse_heads(data[1:]):
        check_decision(head, bound)


# ---------------------------------------------------------------- RADIUS

SECRET = b"fuzz-secret"
_LISTENER: RadiusListener | None = None


def listener() -> RadiusListener:
    global _LISTENER
    if _LISTENER is None:
        settings = ListenerSettings(host="127.0.0.1", port=0,
                                    secrets={"127.0.0.1": SECRET}, ttl=60.0)
        _LISTENER = RadiusListener(settings, MemoryStore())
        _LISTENER._lanes = [asyncio.Queue() for _ in range(LANES)]
    return _LISTENER


def radius_target(data: bytes) -> str:
    """data[0] bit 0: sign the packet (reach decoding) or send it as is. Returns the
    outcome: a drop reason, or the accepted event's status."""
    if not data:
        return "empty"
    body = data[1:]
    if data[0] & 1 and len(body) >= 20:
        length = len(body).to_bytes(2, "big") if data[0] & 2 else body[2:4]
        head = bytes([4, body[1]]) + length
        attrs = body[20:]
        auth = hashlib.md5(head + bytes(16) + attrs + SECRET).digest()
        body = head + auth + attrs
    lst = listener()
    lst._inflight.clear()
    try:
        lst._receive(body, ("127.0.0.1", 1813))
    except Rejected as rejected:
        return rejected.reason.value
    lane: Any = next(q for q in lst._lanes if not q.empty())
    event, _packet, _addr = lane.get_nowait()
    if event.status in ("start", "interim", "stop"):
        ipaddress.ip_address(event.ip)
        assert event.session_id
        if event.status != "stop" or event.msisdn:
            assert is_possible_msisdn(event.msisdn), event.msisdn
    return str(event.status)
