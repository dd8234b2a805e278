"""The RADIUS listener driven by FreeRADIUS `radclient`, end to end: accounting in, curl
through the gateway from the bound address, the partner header at an echo origin."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bindings_support import (
    MSISDN_A,
    MSISDN_B,
    SECRET,
    EchoOrigin,
    GatewayProcess,
    accounting_attributes,
    radclient,
    start_gateway,
)
from redis_server import RedisServer

# Two gateways share Redis with this staleness bound (the default, [store] cache_ttl).
STALENESS_BOUND = 1.0
# Scheduling slack on a loaded CI machine on top of the bound.
SLACK = 1.0


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoOrigin]:
    origin = EchoOrigin()
    yield origin
    origin.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, echo: EchoOrigin
            ) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("radius-gw")
    profiles = directory / "profiles.csv"
    profiles.write_text("msisdn,age_verified,opt_out\n"
                        f"{MSISDN_A},true,\n"
                        f"{MSISDN_B},false,billing\n")
    gw = start_gateway(directory, echo.port,
                       extra=f'[profiles]\nfile = "{profiles}"\nreload_interval = 0.2\n')
    yield gw
    gw.stop()


def test_start_interim_stop_drive_the_partner_header(gateway: GatewayProcess) -> None:
    ip = "127.0.0.11"
    assert gateway.identity(ip) is None
    assert gateway.accounting("Start", ip, session="sess-1")
    assert gateway.identity(ip) == MSISDN_A
    assert gateway.accounting("Interim-Update", ip, session="sess-1")
    assert gateway.identity(ip) == MSISDN_A
    # a late Stop of some older session never removes the current one
    assert gateway.accounting("Stop", ip, session="sess-0")
    assert gateway.identity(ip) == MSISDN_A
    assert gateway.accounting("Stop", ip, session="sess-1")
    assert gateway.identity(ip) is None
    # not a partner host: never any identity, bound or not
    assert gateway.accounting("Start", ip, session="sess-2")
    assert "x-up-calling-line-id" not in gateway.curl(ip, "elsewhere.test")


def test_an_interim_after_its_stop_binds_nothing(gateway: GatewayProcess) -> None:
    # UDP reorders and NAS retransmit: the session's Interim can arrive after its Stop, by
    # which time the address may be another subscriber's. It must not bring A back.
    ip = "127.0.0.13"
    assert gateway.accounting("Start", ip, session="late-1")
    assert gateway.accounting("Stop", ip, session="late-1")
    assert gateway.accounting("Interim-Update", ip, session="late-1")  # answered, ignored
    assert gateway.identity(ip) is None
    assert gateway.accounting("Start", ip, msisdn="447400900789", session="late-2")
    assert gateway.identity(ip) == "447400900789"
    assert gateway.accounting("Stop", ip, session="late-2")


def test_a_new_start_replaces_the_previous_subscriber(gateway: GatewayProcess) -> None:
    ip = "127.0.0.12"
    assert gateway.accounting("Start", ip, msisdn=MSISDN_A, session="a")
    assert gateway.accounting("Start", ip, msisdn="447400900789", session="b")
    assert gateway.identity(ip) == "447400900789"
    assert gateway.accounting("Stop", ip, session="b")


def test_accounting_off_drops_only_that_nas(gateway: GatewayProcess) -> None:
    assert gateway.accounting("Start", "127.0.0.21", session="n1", nas="10.0.1.1")
    assert gateway.accounting("Start", "127.0.0.22", session="n2", nas="10.0.1.2")
    assert gateway.accounting("Accounting-Off", nas="10.0.1.1")
    assert gateway.identity("127.0.0.21") is None
    assert gateway.identity("127.0.0.22") == MSISDN_A
    assert gateway.accounting("Accounting-On", nas="10.0.1.2")  # NAS restarted
    assert gateway.identity("127.0.0.22") is None


def test_wrong_secret_is_not_answered_and_binds_nothing(gateway: GatewayProcess) -> None:
    before = gateway.metric("linewarden_radius_dropped_total", "bad_authenticator")
    assert not gateway.accounting("Start", "127.0.0.31", secret="not-the-secret",
                                  timeout=0.5, retries=1)
    assert gateway.identity("127.0.0.31") is None
    assert gateway.metric("linewarden_radius_dropped_total", "bad_authenticator") > before


def test_impossible_calling_station_id_is_dropped(gateway: GatewayProcess) -> None:
    assert not gateway.accounting("Start", "127.0.0.32", msisdn="12", timeout=0.5)
    assert gateway.identity("127.0.0.32") is None
    assert gateway.metric("linewarden_radius_dropped_total", "bad_msisdn") >= 1


def test_profiles_opt_out_and_age(gateway: GatewayProcess) -> None:
    assert gateway.accounting("Start", "127.0.0.41", msisdn=MSISDN_A, session="p1")
    assert gateway.accounting("Start", "127.0.0.42", msisdn=MSISDN_B, session="p2")
    seen = gateway.curl("127.0.0.41")
    assert seen.get("x-up-calling-line-id") == MSISDN_A
    assert seen.get("x-age-over-18") == "true"
    # MSISDN_B opted out of "billing": nothing for it; "agecheck" still gets its claims
    seen = gateway.curl("127.0.0.42")
    assert "x-up-calling-line-id" not in seen and "x-age-over-18" not in seen
    assert gateway.curl("127.0.0.42", "age.test").get("x-age-over-18") == "false"
    assert gateway.metric("linewarden_withheld_disclosures_total", "opt_out") >= 1


def test_profiles_reload_when_the_file_changes(gateway: GatewayProcess) -> None:
    profiles = gateway.directory / "profiles.csv"
    assert gateway.accounting("Start", "127.0.0.43", msisdn="447400900321", session="r")
    assert gateway.identity("127.0.0.43") == "447400900321"
    original = profiles.read_text()
    try:
        profiles.write_text(original + "447400900321,true,all\n")
        deadline = time.monotonic() + 5
        while gateway.identity("127.0.0.43") is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gateway.identity("127.0.0.43") is None
    finally:
        profiles.write_text(original)


def test_junk_is_dropped_counted_and_does_not_stop_accounting(
        gateway: GatewayProcess) -> None:
    start = accounting_attributes("Start", "127.0.0.51", session="j").encode()
    port = gateway.radius_port
    junk = [
        b"",
        b"\x04\x01",  # too short
        os.urandom(100),  # garbage
        b"\x04\x01\x00\x19" + bytes(16) + b"\x01\x40abc",  # attribute runs past the end
        b"\x04\x01\x00\x18" + bytes(16) + b"\x1a\x04\x00\x00",  # truncated VSA header
        b"\x04\x01\x10\x00" + bytes(5000),  # oversized
        b"\x01\x01\x00\x14" + bytes(16),  # Access-Request on the accounting port
        b"\x04\x01\x00\x40" + bytes(16),  # Length longer than the datagram
        _signed(b"\x1a\x0c" + struct.pack("!I", 99999) + b"\x01\x06abcd"),  # unknown vendor
        _signed(b"\x1a\x0a" + struct.pack("!I", 10415) + b"\x01\x09ab"),  # VSA overruns
        _signed(b"\x28\x03\x01"),  # Acct-Status-Type of one octet
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.99", 0))  # not a configured client
        stranger.sendto(_signed(b""), ("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(200):
            for datagram in junk:
                sock.sendto(datagram, ("127.0.0.1", port))
            time.sleep(0.001)  # a flood, not a kernel receive-buffer overflow
    t0 = time.monotonic()
    assert radclient(port, SECRET, start.decode())
    assert time.monotonic() - t0 < 2.0
    assert gateway.identity("127.0.0.51") == MSISDN_A
    for reason in ("too_short", "too_long", "malformed", "not_accounting", "bad_length",
                   "bad_authenticator", "unknown_client"):
        assert gateway.metric("linewarden_radius_dropped_total", reason) >= 1, reason
    assert gateway.metric("linewarden_radius_dropped_total", "missing_attribute") >= 200
    assert gateway.proc.poll() is None  # still running


def _signed(attributes: bytes) -> bytes:
    """A correctly authenticated Accounting-Request with these raw attributes."""
    import hashlib

    header = struct.pack("!BBH", 4, 7, 20 + len(attributes))
    auth = hashlib.md5(header + bytes(16) + attributes + SECRET.encode()).digest()
    return header + auth + attributes


def test_expired_binding_gives_no_identity(tmp_path: Path, echo: EchoOrigin) -> None:
    gw = start_gateway(tmp_path / "short-ttl", echo.port, ttl=1.0)
    try:
        assert gw.accounting("Start", "127.0.0.61", session="e")
        assert gw.identity("127.0.0.61") == MSISDN_A
        time.sleep(1.3)  # no Interim-Update within the ttl
        assert gw.identity("127.0.0.61") is None
        assert gw.metric("linewarden_withheld_disclosures_total", "stale_binding") >= 1
    finally:
        gw.stop()


def test_two_gateways_share_one_redis(tmp_path: Path, echo: EchoOrigin,
                                      redis_server: RedisServer) -> None:
    url = redis_server.url
    first = start_gateway(tmp_path / "gw1", echo.port, store_url=url)
    second = start_gateway(tmp_path / "gw2", echo.port, store_url=url, radius=False)
    try:
        assert second.identity("127.0.0.71") is None  # cached as "no binding" on gw2
        assert first.accounting("Start", "127.0.0.71", session="shared")
        assert _eventually(lambda: second.identity("127.0.0.71") == MSISDN_A)
        assert first.accounting("Stop", "127.0.0.71", session="shared")
        assert _eventually(lambda: second.identity("127.0.0.71") is None)
        assert first.identity("127.0.0.71") is None
    finally:
        first.stop()
        second.stop()


def test_redis_down_leaves_accounting_unanswered_until_it_returns(
        tmp_path: Path, echo: EchoOrigin) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    gw = start_gateway(tmp_path / "gw", echo.port, store_url=redis.url)
    try:
        redis.stop()
        assert not gw.accounting("Start", "127.0.0.81", session="d", timeout=0.5)
        assert gw.identity("127.0.0.81") is None  # fail closed, request still served
        redis.start()
        assert _eventually(lambda: gw.accounting("Start", "127.0.0.81", session="d",
                                                 timeout=0.5), within=10)
        assert _eventually(lambda: gw.identity("127.0.0.81") == MSISDN_A)
        assert "unreachable" in (gw.directory / "stderr.log").read_text()
    finally:
        gw.stop()
        redis.stop()


def _eventually(check: object, within: float = STALENESS_BOUND + SLACK) -> bool:
    assert callable(check)
    deadline = time.monotonic() + within
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
