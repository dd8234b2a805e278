"""[proxy.resolve]: parsed once at start-up, looked up per request."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from linewarden.proxy.upstream import resolve_static, static_routes


def test_every_spelling_of_a_static_route() -> None:
    routes = static_routes({"a.test": "10.0.0.1", "b.test": "10.0.0.2:8080",
                            "c.test": "[::1]", "d.test": "[2001:db8::5]:8443"})
    assert resolve_static(routes, "a.test", 81) == ("10.0.0.1", 81)  # the URI's port
    assert resolve_static(routes, "b.test", 81) == ("10.0.0.2", 8080)  # overridden
    assert resolve_static(routes, "c.test", 80) == ("::1", 80)
    assert resolve_static(routes, "d.test", 80) == ("2001:db8::5", 8443)
    assert resolve_static(routes, "e.test", 80) is None  # not static: DNS decides


@given(host=st.from_regex(r"[a-z]{1,10}\.test", fullmatch=True),
       octets=st.lists(st.integers(0, 255), min_size=4, max_size=4),
       port=st.one_of(st.none(), st.integers(1, 65535)), uri_port=st.integers(1, 65535))
def test_a_route_keeps_or_overrides_the_port(host: str, octets: list[int], port: int | None,
                                             uri_port: int) -> None:
    ip = ".".join(map(str, octets))
    routes = static_routes({host: ip if port is None else f"{ip}:{port}"})
    assert resolve_static(routes, host, uri_port) == (ip, uri_port if port is None else port)
