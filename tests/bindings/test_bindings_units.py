"""Pure parts of the bindings: RADIUS checks (against pyrad as an independent reference),
accounting events, profiles, the opt-out rule in the decision core, the memory layout."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrad.packet import AcctPacket  # type: ignore[import-untyped]

from linewarden.bindings import Binding
from linewarden.bindings.memory import MemoryStore
from linewarden.bindings.profiles import (
    ProfileBook,
    ProfiledStore,
    ProfileError,
    load_profiles,
)
from linewarden.bindings.radius import (
    AccountingEvent,
    Drop,
    ListenerSettings,
    RadiusListener,
    Rejected,
    authentic,
    check_framing,
    default_dictionary,
    read_event,
)
from linewarden.claims import Secrets
from linewarden.decide import RequestHead, Rules, Settings, decide
from linewarden.identifiers import mask_msisdn
from linewarden.policy.load import parse_policy

SECRET = b"unit-secret"
MSISDN = "447400900123"
DICT = default_dictionary()

POLICY = """
[[partners]]
id = "billing"
purpose = "billing"
hosts = ["pay.example.com"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"

[[partners]]
id = "age"
purpose = "age_verification"
hosts = ["age.example.com"]
[partners.headers]
X-Adult = "age_over_18"
"""


def request(secret: bytes = SECRET, **attributes: object) -> bytes:
    packet = AcctPacket(secret=secret, dict=DICT)
    for name, value in attributes.items():
        packet[name.replace("_", "-")] = value
    return bytes(packet.RequestPacket())


def start(**extra: object) -> bytes:
    attributes: dict[str, object] = {
        "Acct_Status_Type": "Start", "Framed_IP_Address": "10.9.0.1",
        "Calling_Station_Id": MSISDN, "Acct_Session_Id": "abc", "NAS_IP_Address": "10.0.0.1"}
    attributes.update(extra)
    return request(**attributes)


def event(data: bytes, client: str = "127.0.0.1") -> AccountingEvent:
    data = check_framing(data)
    return read_event(AcctPacket(secret=SECRET, dict=DICT, packet=data), client)


# ---------------------------------------------------------------- authenticator, framing

@given(st.binary(min_size=0, max_size=200), st.binary(min_size=1, max_size=32),
       st.integers(0, 255))
def test_authenticator_agrees_with_pyrad(attrs: bytes, secret: bytes, ident: int) -> None:
    header = struct.pack("!BBH", 4, ident, 20 + len(attrs))
    good = header + hashlib.md5(header + bytes(16) + attrs + secret).digest() + attrs
    bad = header + bytes(16) + attrs
    for data in (good, bad):
        reference = AcctPacket(secret=secret, dict=None)
        reference.raw_packet = data
        reference.authenticator = data[4:20]
        assert authentic(data, secret) == bool(reference.VerifyAcctRequest())
    assert authentic(good, secret) and not authentic(good, secret + b"x")


def test_real_requests_verify_and_decode_every_attribute() -> None:
    data = start(**{"3GPP_IMSI": "234100000000001", "3GPP_IMEISV": "3520990017614823",
                    "3GPP_RAT_Type": 6, "3GPP_IMSI_MCC_MNC": "23410",
                    "Called_Station_Id": "internet"})
    assert authentic(data, SECRET) and not authentic(data, b"other")
    e = event(data)
    assert (e.status, e.ip, e.msisdn, e.session_id, e.source) == (
        "start", "10.9.0.1", MSISDN, "abc", "10.0.0.1")
    assert (e.imsi, e.imeisv) == ("234100000000001", "3520990017614823")
    assert dict(e.attributes) == {"apn": "internet", "rat_type": "6", "mcc_mnc": "23410"}


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x04\x01\x00", Drop.TOO_SHORT),
    (b"\x04\x01\x00\x14" + bytes(16) + bytes(5000), Drop.TOO_LONG),
    (b"\x01\x01\x00\x14" + bytes(16), Drop.NOT_ACCOUNTING),
    (b"\x04\x01\x00\x13" + bytes(16), Drop.BAD_LENGTH),
    (b"\x04\x01\x00\x30" + bytes(16), Drop.BAD_LENGTH),
    (b"\x04\x01\x00\x17" + bytes(16) + b"\x01\x05a", Drop.MALFORMED),
    (b"\x04\x01\x00\x16" + bytes(16) + b"\x01\x01", Drop.MALFORMED),
])
def test_framing_rejects(data: bytes, reason: Drop) -> None:
    with pytest.raises(Rejected) as info:
        check_framing(data)
    assert info.value.reason is reason


def test_padding_after_length_is_ignored() -> None:
    data = start()
    assert check_framing(data + b"\0" * 10) == data


@pytest.mark.parametrize(("changes", "reason"), [
    ({"Calling_Station_Id": "12"}, Drop.BAD_MSISDN),
    ({"Calling_Station_Id": "not-a-number"}, Drop.BAD_MSISDN),
    ({"Acct_Status_Type": 15}, Drop.UNKNOWN_STATUS),  # Failed
    ({"Acct_Session_Id": ""}, Drop.MISSING_ATTRIBUTE),
    ({"Framed_IPv6_Prefix": "2001:db8::/56", "Framed_IP_Address": None}, Drop.BAD_ADDRESS),
])
def test_events_that_are_refused(changes: dict[str, object], reason: Drop) -> None:
    attributes = {"Acct_Status_Type": "Start", "Framed_IP_Address": "10.9.0.1",
                  "Calling_Station_Id": MSISDN, "Acct_Session_Id": "abc"}
    attributes.update(changes)
    data = request(**{k: v for k, v in attributes.items() if v not in (None, "")})
    with pytest.raises(Rejected) as info:
        event(data)
    assert info.value.reason is reason


def test_stop_needs_no_number_and_on_off_need_no_session() -> None:
    e = event(request(Acct_Status_Type="Stop", Framed_IP_Address="10.9.0.1",
                      Acct_Session_Id="abc"))
    assert (e.status, e.msisdn) == ("stop", "")
    e = event(request(Acct_Status_Type="Accounting-Off"), client="192.0.2.7")
    assert (e.status, e.source) == ("accounting_off", "192.0.2.7")  # no NAS-IP-Address


def test_ipv6_prefix_binds_the_64() -> None:
    e = event(request(Acct_Status_Type="Start", Calling_Station_Id=MSISDN,
                      Acct_Session_Id="v6", Framed_IPv6_Prefix="2001:db8:7:8::/64"))
    assert e.ip == "2001:db8:7:8::"


# ---------------------------------------------------------------- the listener in-process

def test_listener_answers_only_after_the_store_and_counts_drops() -> None:
    async def main() -> None:
        store = MemoryStore()
        listener = RadiusListener(ListenerSettings("127.0.0.1", 0, {"127.0.0.1": SECRET}, 60),
                                  store)
        await listener.start()
        loop = asyncio.get_running_loop()
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                answers.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=listener.address)
        try:
            for junk in (b"x", bytes(30), start(secret=b"wrong")):
                transport.sendto(junk)
            data = start()
            transport.sendto(data)
            reply = await asyncio.wait_for(answers.get(), 2)
            assert store.get("10.9.0.1") is not None
            # RFC 2866 §3: Response Authenticator = MD5(response with the request's
            # authenticator in place + secret)
            expected = hashlib.md5(reply[:4] + data[4:20] + reply[20:] + SECRET).digest()
            assert reply[0] == 5 and reply[1] == data[1] and reply[4:20] == expected
            assert answers.empty()
            counts = listener.metrics.counts
            assert counts["start"] == 1 and counts["too_short"] == 1
            assert counts["not_accounting"] == 1 and counts["bad_authenticator"] == 1
        finally:
            transport.close()
            await listener.close()
    asyncio.run(main())


def test_listener_stays_silent_when_the_store_fails() -> None:
    class Broken(MemoryStore):
        async def write(self, binding: Binding) -> None:
            raise ConnectionError("store down")

    async def main() -> None:
        listener = RadiusListener(ListenerSettings("127.0.0.1", 0, {"127.0.0.1": SECRET}, 60),
                                  Broken())
        await listener.start()
        loop = asyncio.get_running_loop()
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                answers.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=listener.address)
        try:
            transport.sendto(start())
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(answers.get(), 0.3)
            assert listener.metrics.counts["store_failed"] == 1
        finally:
            transport.close()
            await listener.close()
    asyncio.run(main())


# ---------------------------------------------------------------- profiles

def test_csv_and_sqlite_profiles(tmp_path: Path) -> None:
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("msisdn,age_verified,opt_out\n"
                        "447400900123,true,\n+447400900456,no,billing;age\n"
                        "447400900789,,ALL\n")
    db = tmp_path / "p.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE profiles (msisdn TEXT, age_verified INTEGER, opt_out TEXT)")
        conn.executemany("INSERT INTO profiles VALUES (?, ?, ?)", [
            ("447400900123", 1, None), ("447400900456", 0, "billing age"),
            ("447400900789", None, "all")])
    for path in (csv_file, db):
        profiles = load_profiles(path)
        assert profiles["447400900123"].attributes() == {"age_over_18": "true"}
        assert profiles["447400900456"].attributes() == {"age_over_18": "false",
                                                         "opt_out": "billing age"}
        assert profiles["447400900789"].attributes() == {"opt_out": "*"}


@pytest.mark.parametrize("text", [
    "number,age\n447400900123,true\n",
    "msisdn,age_verified,opt_out\n12,true,\n",
    "msisdn,age_verified,opt_out\n447400900123,maybe,\n",
])
def test_bad_profile_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(ProfileError):
        ProfileBook(path)


def test_a_bad_reload_keeps_the_profiles_in_use(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("msisdn,age_verified,opt_out\n447400900123,true,\n")
    book = ProfileBook(path)
    path.write_text("msisdn,age_verified,opt_out\n447400900123,perhaps,\n")
    assert not book.reload()
    assert book.attributes(MSISDN) == {"age_over_18": "true"}
    path.write_text("msisdn,age_verified,opt_out\n447400900123,false,all\n")
    assert book.reload()
    assert book.attributes(MSISDN) == {"age_over_18": "false", "opt_out": "*"}


def test_profiled_store_joins_profiles_to_reads(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("msisdn,age_verified,opt_out\n447400900123,true,billing\n")
    inner = MemoryStore()
    inner.put(Binding("10.0.0.1", MSISDN, {"age_over_18": "false", "apn": "web"}))
    inner.put(Binding("10.0.0.2", "447400900456"))
    store = ProfiledStore(inner, ProfileBook(path))
    got = store.get("10.0.0.1")
    assert got is not None
    assert dict(got.attributes) == {"age_over_18": "true", "apn": "web", "opt_out": "billing"}
    assert got.opted_out("billing") and not got.opted_out("age")
    other = store.get("10.0.0.2")
    assert other is not None and dict(other.attributes) == {}


# ---------------------------------------------------------------- decide: opt-out

@pytest.mark.parametrize(("opt_out", "billing", "age"), [
    ("", True, True), ("billing", False, True), ("*", False, False),
    ("age other", True, False),
])
def test_opted_out_partners_get_nothing(opt_out: str, billing: bool, age: bool) -> None:
    policy, _ = parse_policy(POLICY, "p.toml")
    rules = Rules(policy, Settings(secrets=Secrets(b"p", b"l", "234-10")))
    attributes = {"age_over_18": "true", **({"opt_out": opt_out} if opt_out else {})}
    binding = Binding("10.0.0.1", MSISDN, attributes)
    for host, expected in (("pay.example.com", billing), ("age.example.com", age)):
        target = f"http://{host}/".encode()
        head = RequestHead(b"GET", target, "1.1", [(b"Host", host.encode())])
        d = decide(head, binding, rules, switch_tripped=False, now=time.time())
        assert bool(d.identity) is expected
        assert (d.record is not None) is expected
        assert d.withheld == (None if expected else "opt_out")


# ---------------------------------------------------------------- small things

def test_mask_keeps_the_last_three_digits() -> None:
    assert mask_msisdn(MSISDN) == "*********123"
    assert mask_msisdn("12") == "12"


def test_memory_store_rejects_nul_and_junk_addresses() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError):
        store.put(Binding("10.0.0.1", MSISDN, session_id="a\0b"))
    with pytest.raises(ValueError):
        store.put(Binding("nope", MSISDN))
    assert store.get("nope") is None
    store.put(Binding("::ffff:10.0.0.3", MSISDN))
    assert store.get("10.0.0.3") is not None  # IPv4-mapped is the IPv4 address
