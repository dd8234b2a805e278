"""hostport.py: the one `host:port` parser (config listeners, --listen, the canary)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linewarden.hostport import connect_address, parse_host_port

PORTS = st.integers(0, 65535)
NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True)


@given(st.one_of(NAMES, st.ip_addresses(v=4).map(str)), PORTS)
def test_names_and_ipv4_round_trip(host: str, port: int) -> None:
    assert parse_host_port(f"{host}:{port}") == (host, port)


@given(st.ip_addresses(v=6), PORTS)
def test_bracketed_ipv6_round_trips(address: ipaddress.IPv6Address, port: int) -> None:
    assert parse_host_port(f"[{address}]:{port}") == (str(address), port)


@pytest.mark.parametrize("text", ["8080", "127.0.0.1:", "127.0.0.1:65536", "[zz]:80",
                                  "host:-1", "host:8o", ":8080"])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|not an IPv6 address"):
        parse_host_port(text)


def test_an_empty_host_takes_the_default_when_one_is_given() -> None:
    assert parse_host_port(":8080", default_host="127.0.0.1") == ("127.0.0.1", 8080)


@pytest.mark.parametrize(("listen", "target"), [
    ("0.0.0.0:3128", ("127.0.0.1", 3128)), ("[::]:3128", ("::1", 3128)),
    (":3128", ("127.0.0.1", 3128)), ("10.1.2.3:80", ("10.1.2.3", 80)),
])
def test_connect_address_reaches_a_wildcard_bind_over_loopback(
        listen: str, target: tuple[str, int]) -> None:
    assert connect_address(listen) == target
