"""The proxy is no way into the gateway or its host (PRODUCT.md invariant 6, issue 15 item 1).

Through the real `linewarden serve` subprocess: every spelling of a loopback address, in
forward, transparent, CONNECT and WebSocket-upgrade requests, answers 403 and reaches
nothing; a loopback service not in [proxy.resolve] never sees a connection; the gateway's
own web port refuses to be reached through the proxy (no forged binding); deny/allow lists.
Then the policy itself against a reference written with integer ranges (hypothesis).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire import RawClient, exchange, marker

from linewarden.bindings.memory import MemoryStore
from linewarden.claims import Secrets
from linewarden.config import load_config
from linewarden.decide import Rules, Settings
from linewarden.destinations import DestinationPolicy, masked_client, same_host
from linewarden.policy.load import parse_policy
from linewarden.proxy.server import DEFAULT, Route
from linewarden.proxy.server import Gateway as ProxyGateway
from linewarden.proxy.upstream import DestinationRefused, Pool
from linewarden.sourcemap import ConfigErrors
from lwtest import MSISDN_2, Gateway, Origin, gateway_config, launch_serve

# Every spelling a resolver turns into this host's loopback or unspecified address.
LOOPBACK_SPELLINGS = ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1",
                      "127.0.0.1.", "localhost", "localhost.", "[::1]", "[::ffff:127.0.0.1]",
                      "[::ffff:7f00:1]", "0", "0.0.0.0"]
WS_HEADERS = (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


class Listener:
    """A plain TCP service on 127.0.0.x that records every connection and byte it gets:
    the 'internal loopback service' the proxy must never reach."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self.received = b""
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                data = conn.recv(65536)
                with self._lock:
                    self.received += data
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninternal")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def internal() -> Iterator[Listener]:
    service = Listener()
    yield service
    service.close()


def _start(directory: Path, origin: Origin, extra_ports: list[int], proxy_extra: str = ""
           ) -> Gateway:
    def write(proxy_port: int, web_port: int) -> Path:
        path = directory / "linewarden.toml"
        path.write_text(gateway_config(
            directory, origin.port, proxy_port=proxy_port, web_port=web_port,
            connect_ports=[*extra_ports, proxy_port, web_port], proxy_extra=proxy_extra))
        return path

    proc, proxy_port, web_port, config = launch_serve(directory, write)
    return Gateway(proc, proxy_port, web_port, directory, config)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, origin: Origin,
            internal: Listener) -> Iterator[Gateway]:
    """Default destination policy; the internal service's port is a CONNECT port, so only
    the destination policy stands between a subscriber and it."""
    gw = _start(tmp_path_factory.mktemp("guarded"), origin, [internal.port])
    yield gw
    gw.stop()


def _authority(host: str, port: int) -> str:
    return f"{host}:{port}"


def _requests(host: str, port: int, path: str) -> dict[str, bytes]:
    a = _authority(host, port).encode()
    p = path.encode()
    return {
        "forward": b"GET http://%b%b HTTP/1.1\r\nHost: %b\r\n\r\n" % (a, p, a),
        "transparent": b"GET %b HTTP/1.1\r\nHost: %b\r\n\r\n" % (p, a),
        "connect": b"CONNECT %b HTTP/1.1\r\nHost: %b\r\n\r\n" % (a, a),
        "websocket": b"GET http://%b%b HTTP/1.1\r\nHost: %b\r\n%b\r\n" % (a, p, a, WS_HEADERS),
    }


def _metric(gw: Gateway, name: str, label: str) -> float:
    text = gw.metrics()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{label}}} "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_every_loopback_spelling_is_refused_in_every_mode(guarded: Gateway, internal: Listener,
                                                          spelling: str) -> None:
    for mode, request in _requests(spelling, internal.port, "/" + marker()).items():
        data, closed = exchange(guarded.proxy_port, request)
        assert data.startswith(b"HTTP/1.1 403 "), (mode, data[:200])
        assert b"does not connect to that destination" in data, (mode, data)
        assert closed, mode
    assert internal.connections == 0 and internal.received == b""


def test_refusals_are_counted_by_reason_and_logged_masked(guarded: Gateway,
                                                          internal: Listener) -> None:
    before = _metric(guarded, "linewarden_refused_destinations_total", 'reason="loopback"')
    data, _ = exchange(guarded.proxy_port, _requests("127.0.0.1", internal.port, "/m")["forward"],
                       source="127.0.0.2")
    assert data.startswith(b"HTTP/1.1 403 ")
    after = _metric(guarded, "linewarden_refused_destinations_total", 'reason="loopback"')
    assert after == before + 1
    log = guarded.log()
    assert "destination refused (loopback) for client 127.0.0.x" in log
    assert "127.0.0.2" not in log and MSISDN_2 not in log


@pytest.mark.parametrize("address", ["169.254.169.254", "[fe80::1]", "224.0.0.1",
                                     "255.255.255.255", "240.0.0.1", "[::]", "[ff02::1]",
                                     "[64:ff9b::7f00:1]", "[2002:7f00:1::]",
                                     "[::127.0.0.1]", "[64:ff9b::a9fe:a9fe]"])
def test_other_host_internal_ranges_are_refused_before_any_connect(guarded: Gateway,
                                                                   address: str) -> None:
    data, _ = exchange(guarded.proxy_port, _requests(address, 80, "/x")["forward"])
    assert data.startswith(b"HTTP/1.1 403 "), data[:200]


def test_own_web_port_is_unreachable_and_no_binding_can_be_forged(guarded: Gateway,
                                                                   origin: Origin) -> None:
    """Issue 15's opening exploit: POST /admin/bindings through the proxy, in every mode."""
    forged = json.dumps({"ip": "127.0.0.5", "msisdn": MSISDN_2}).encode()
    body = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(forged),
                                                                               forged)
    web = guarded.web_port
    for spelling in ("127.0.0.1", "127.1", "2130706433", "localhost", "[::ffff:127.0.0.1]"):
        a = _authority(spelling, web).encode()
        for request in (b"POST http://%b/admin/bindings HTTP/1.1\r\nHost: %b\r\n%b" % (a, a, body),
                        b"POST /admin/bindings HTTP/1.1\r\nHost: %b\r\n%b" % (a, body)):
            data, _ = exchange(guarded.proxy_port, request, source="127.0.0.5")
            assert data.startswith(b"HTTP/1.1 403 "), data[:200]
        for path in ("/metrics", "/admin/bindings?reveal=1"):
            for mode, request in _requests(spelling, web, path).items():
                data, _ = exchange(guarded.proxy_port, request, source="127.0.0.5")
                assert data.startswith(b"HTTP/1.1 403 "), (mode, data[:200])
                assert b"447400900" not in data
    # The proxy's own port, too (a loop through ourselves).
    data, _ = exchange(guarded.proxy_port,
                       _requests("127.0.0.1", guarded.proxy_port, "/")["forward"])
    assert data.startswith(b"HTTP/1.1 403 ")
    # The binding does not exist: 127.0.0.5 gets no identity at a partner...
    m = marker()
    with RawClient(guarded.proxy_port, source="127.0.0.5") as client:
        client.send(f"GET http://partner.test/{m} HTTP/1.1\r\nHost: partner.test\r\n\r\n"
                    .encode())
        assert client.response().status == 200
    [rec] = origin.with_marker(m)
    assert MSISDN_2.encode() not in rec.raw and rec.values("x-up-calling-line-id") == []
    # ...and the admin API (reached directly, as an operator would) does not list it.
    listing = guarded.admin("GET", "/admin/bindings")
    assert "127.0.0.5" not in [b["ip"] for b in listing["bindings"]]


def test_mapped_hosts_still_reach_loopback(guarded: Gateway, origin: Origin) -> None:
    """[proxy.resolve] is the operator's explicit choice: partner.test -> 127.0.0.1:origin."""
    m = marker()
    data, _ = exchange(guarded.proxy_port,
                       f"GET http://partner.test/{m} HTTP/1.1\r\nHost: partner.test\r\n"
                       "Connection: close\r\n\r\n".encode())
    assert data.startswith(b"HTTP/1.1 200 ")
    assert len(origin.with_marker(m)) == 1


def test_allow_and_deny_destinations(tmp_path: Path, origin: Origin) -> None:
    """allow 127.0.0.0/8 (exceptions to the default), deny 127.0.0.3/32 (longer prefix wins);
    the gateway's own listeners stay refused whatever allow says."""
    allowed, denied, banner = Listener("127.0.0.1"), Listener("127.0.0.3"), Banner()
    try:
        gw = _start(tmp_path / "gw", origin, [allowed.port, denied.port, banner.port],
                    'allow_destinations = ["127.0.0.0/8"]\n'
                    'deny_destinations = ["127.0.0.3/32", "10.0.0.0/8"]')
        try:
            data, _ = exchange(gw.proxy_port, b"GET http://127.0.0.1:%d/ok HTTP/1.1\r\n"
                               b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n" % allowed.port)
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"internal")
            assert allowed.connections == 1
            for mode, request in _requests("127.0.0.3", denied.port, "/no").items():
                data, _ = exchange(gw.proxy_port, request)
                assert data.startswith(b"HTTP/1.1 403 ") and b"(denied)" in data, (mode, data)
            assert denied.connections == 0
            for port in (gw.web_port, gw.proxy_port):
                for mode, request in _requests("127.0.0.1", port, "/metrics").items():
                    data, _ = exchange(gw.proxy_port, request)
                    assert data.startswith(b"HTTP/1.1 403 ") and b"(gateway)" in data, mode
            assert _metric(gw, "linewarden_refused_destinations_total", 'reason="gateway"') == 8
            # An allowed CONNECT to a server that speaks first: bytes that arrive while the
            # destination is vetted are held, not dropped, and follow our 200.
            with RawClient(gw.proxy_port) as client:
                client.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % banner.port)
                while not client.buf.endswith(Banner.GREETING) and client._fill():
                    pass
            assert client.buf == b"HTTP/1.1 200 Connection established\r\n\r\n" + \
                Banner.GREETING
        finally:
            gw.stop()
    finally:
        allowed.close()
        denied.close()
        banner.close()


class Banner:
    """A server that speaks first (SSH, SMTP style) on 127.0.0.1."""

    GREETING = b"SSH-2.0-linewarden-test\r\n"

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                conn.sendall(self.GREETING)
                conn.recv(1)  # hold the connection until the client goes

    def close(self) -> None:
        self.sock.close()


def test_bad_cidr_is_a_config_error_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "linewarden.toml"
    path.write_text('[proxy]\nlisten = "127.0.0.1:3128"\ndeny_destinations = ["10.0.0.1/8"]\n'
                    'allow_destinations = ["somewhere"]\n')
    with pytest.raises(ConfigErrors) as err:
        load_config(str(path))
    text = str(err.value)
    assert f"{path}:3:" in text and "host bits set" in text
    assert f"{path}:4:" in text and "'somewhere' is not a CIDR network" in text


# ---------------------------------------------------------------- after connect: this host

def test_this_host_is_refused_after_connect_before_any_byte() -> None:
    """The second line of defence, on a real socket: an address the pre-connect check let
    through (as a host's own public address would be, with the gateway on 0.0.0.0) is found
    to be this host (local address == peer address) and nothing is sent on it."""
    service = Listener("127.0.0.1")

    async def run() -> None:
        policy, _ = parse_policy("")
        gw = ProxyGateway(Rules(policy, Settings(Secrets(b"p", b"l"))), MemoryStore(), _Nothing())
        gw.pool = Pool(asyncio.get_running_loop(), 2.0)
        route = Route(("127.0.0.1", service.port), DEFAULT)
        conn = await gw.pool.connect(route.address)
        assert conn.to_self()
        with pytest.raises(DestinationRefused) as refused:
            gw.vet(route, conn.to_self())
        assert refused.value.reason == "this-host" and refused.value.status == 403
        conn.abort()

    try:
        asyncio.run(run())
        assert service.received == b""
    finally:
        service.close()


def test_the_address_judged_is_the_address_connected_to() -> None:
    """DNS rebinding: a name that answers differently from one lookup to the next. The proxy
    looks it up once per connection, judges every candidate, and connects to the numeric
    address it judged: `rebind.invalid` cannot be resolved by anything but the seam, so a
    second lookup (by the connect, say) would fail. A later answer pointing at the metadata
    address is judged afresh and refused."""
    service = Listener("127.0.0.1")
    lookups: list[str] = []
    answers = [[("169.254.169.254", 80), ("127.0.0.1", service.port)],  # first allowed wins
               [("169.254.169.254", 80)]]

    async def resolver(host: str, port: int) -> list[tuple[str, int]]:
        lookups.append(host)
        return answers[min(len(lookups), len(answers)) - 1]

    async def ask(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET http://rebind.invalid/ HTTP/1.1\r\nHost: rebind.invalid\r\n"
                     b"Connection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return data

    async def run() -> tuple[bytes, bytes]:
        policy, _ = parse_policy("")
        gw = ProxyGateway(Rules(policy, Settings(Secrets(b"p", b"l"))), MemoryStore(),
                          _Nothing(), resolver=resolver,
                          destinations=DestinationPolicy(allow=["127.0.0.1/32"]))
        server = await gw.start("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await ask(port), await ask(port)
        finally:
            await gw.close()

    try:
        first, second = asyncio.run(run())
        assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"internal"), first
        assert second.startswith(b"HTTP/1.1 403 ") and b"(link-local)" in second, second
        assert lookups == ["rebind.invalid", "rebind.invalid"]  # one lookup per request
        assert service.connections == 1
    finally:
        service.close()


class _Nothing:
    async def record(self, rec: object) -> bool:
        return True


def test_judge_connected_rules() -> None:
    policy = DestinationPolicy(listeners=[("0.0.0.0", 8080)])
    assert policy.judge_connected(False, 8080, False) is None
    assert policy.judge_connected(True, 8080, True) == "gateway"  # allow never covers us
    assert policy.judge_connected(True, 5432, False) == "this-host"
    assert policy.judge_connected(True, 5432, True) is None  # explicitly allowed
    assert policy.judge("127.0.0.9", 8080).reason == "gateway"  # wildcard: all of loopback
    assert policy.judge("192.0.2.1", 8080).reason is None  # port 8080 elsewhere is fine
    assert same_host(("10.1.2.3", 40000), ("::ffff:10.1.2.3", 80, 0, 0))
    assert not same_host(("10.1.2.3", 40000), ("10.1.2.4", 80))
    assert not same_host(None, ("10.1.2.4", 80))
    assert masked_client("203.0.113.77") == "203.0.113.x"
    assert masked_client("2001:db8:aa:bb::1") == "2001:db8:aa::x"


# ---------------------------------------------------------------- the policy, by reference

# The default-denied ranges written as inclusive integer ranges, from the RFCs, not from
# ipaddress or destinations.DEFAULT_DENIED.
V4_REFERENCE = [
    (0x00000000, 0x00FFFFFF, "unspecified"),
    (0x7F000000, 0x7FFFFFFF, "loopback"),
    (0xA9FE0000, 0xA9FEFFFF, "link-local"),
    (0xE0000000, 0xEFFFFFFF, "multicast"),
    (0xFFFFFFFF, 0xFFFFFFFF, "broadcast"),
    (0xF0000000, 0xFFFFFFFE, "reserved"),
]
V6_REFERENCE = [
    (0, 0, "unspecified"),
    (1, 1, "loopback"),
    (0xFE80 << 112, (0xFEC0 << 112) - 1, "link-local"),
    (0xFEC0 << 112, (0xFF00 << 112) - 1, "reserved"),
    (0xFF00 << 112, (1 << 128) - 1, "multicast"),
]


def _v4_reference(value: int) -> str | None:
    for low, high, reason in V4_REFERENCE:
        if low <= value <= high:
            return reason
    return None


def _v6_reference(value: int) -> str | None:
    for low, high, reason in V6_REFERENCE:
        if low <= value <= high:
            return reason
    if (0xFFFF << 32) <= value <= (0xFFFF << 32) + 0xFFFFFFFF:  # IPv4-mapped
        return _v4_reference(value & 0xFFFFFFFF)
    if value <= 0xFFFFFFFF:  # IPv4-compatible
        return _v4_reference(value)
    if (0x64FF9B << 96) <= value <= (0x64FF9B << 96) + 0xFFFFFFFF:  # NAT64
        return _v4_reference(value & 0xFFFFFFFF)
    if (0x2002 << 112) <= value < (0x2003 << 112):  # 6to4: bits 16..47
        return _v4_reference((value >> 80) & 0xFFFFFFFF)
    return None


_v4 = st.one_of(st.integers(0, 2**32 - 1),
                st.sampled_from([0, 0x7F000001, 0xA9FEA9FE, 0xFFFFFFFF, 0xE0000001,
                                 0x0A000001, 0xC0A80101]),
                st.integers(0x7EFFFFF0, 0x7F000010), st.integers(0xA9FDFFF0, 0xA9FF0010),
                st.integers(0xDFFFFFF0, 0xF0000010), st.integers(0xFFFFFFF0, 0xFFFFFFFF))
_v6 = st.one_of(st.integers(0, 2**128 - 1),
                st.integers(0, 4),
                _v4.map(lambda v: (0xFFFF << 32) | v),
                _v4,
                _v4.map(lambda v: (0x64FF9B << 96) | v),
                st.tuples(_v4, st.integers(0, 2**80 - 1)).map(
                    lambda t: (0x2002 << 112) | (t[0] << 80) | t[1]),
                st.integers((0xFE7F << 112), (0xFF01 << 112)))


@settings(max_examples=2000, deadline=None)
@given(value=_v4, port=st.integers(1, 65535))
def test_default_policy_matches_the_reference_ipv4(value: int, port: int) -> None:
    address = ".".join(str((value >> s) & 0xFF) for s in (24, 16, 8, 0))
    assert DestinationPolicy().judge(address, port).reason == _v4_reference(value)


@settings(max_examples=2000, deadline=None)
@given(value=_v6, port=st.integers(1, 65535))
def test_default_policy_matches_the_reference_ipv6(value: int, port: int) -> None:
    groups = ":".join(f"{(value >> s) & 0xFFFF:x}" for s in range(112, -1, -16))
    assert DestinationPolicy().judge(f"[{groups}]", port).reason == _v6_reference(value)


_cidr_v4 = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
    lambda t: (t[0] >> (32 - t[1]) << (32 - t[1]) if t[1] else 0, t[1]))


# The same defaults as (first address, prefix length), for the longest-prefix reference.
V4_PREFIXES = [(0x00000000, 8, "unspecified"), (0x7F000000, 8, "loopback"),
               (0xA9FE0000, 16, "link-local"), (0xE0000000, 4, "multicast"),
               (0xF0000000, 4, "reserved"), (0xFFFFFFFF, 32, "broadcast")]


def _reference_with_lists(value: int, allow: list[tuple[int, int]],
                          deny: list[tuple[int, int]]) -> str | None:
    """The most specific range containing `value` decides; at equal length allow, then the
    operator's deny, then the defaults; nothing matching: allowed."""
    candidates: list[tuple[int, int, int, str | None]] = [(n, b, 0, None) for n, b in allow]
    candidates += [(n, b, 1, "denied") for n, b in deny]
    candidates += [(n, b, 2, reason) for n, b, reason in V4_PREFIXES]
    best: tuple[int, int, str | None] | None = None
    for net, bits, rank, reason in candidates:
        inside = net <= value < net + 2 ** (32 - bits)
        if inside and (best is None or bits > best[0] or (bits == best[0] and rank < best[1])):
            best = (bits, rank, reason)
    return None if best is None else best[2]


@settings(max_examples=1000, deadline=None)
@given(value=_v4, allow=st.lists(_cidr_v4, max_size=4), deny=st.lists(_cidr_v4, max_size=4))
def test_allow_and_deny_lists_match_the_reference(value: int, allow: list[tuple[int, int]],
                                                  deny: list[tuple[int, int]]) -> None:
    def cidr(net: int, bits: int) -> str:
        return f"{ipaddress.IPv4Address(net)}/{bits}"

    policy = DestinationPolicy(deny=[cidr(*d) for d in deny], allow=[cidr(*a) for a in allow])
    address = str(ipaddress.IPv4Address(value))
    assert policy.judge(address, 80).reason == _reference_with_lists(value, allow, deny)
