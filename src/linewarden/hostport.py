"""`host:port` text, parsed one way everywhere: listeners in the config, `--listen`, and
where to connect to a listener of our own."""

from __future__ import annotations

import ipaddress

__all__ = ["connect_address", "listener_address", "parse_host_port"]

# A port is 16 bits (RFC 793 §3.1); 0 asks the kernel for any free one.
MAX_PORT = 65535


def parse_host_port(text: str, *, default_host: str | None = None) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` -> (host, port), the IPv6 brackets removed. An empty
    host (`:8080`) is `default_host`, or an error when there is none."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: '{host}' is not an IPv6 address") from None
    elif not host and default_host is not None:
        host = default_host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= MAX_PORT:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)")
    return host, int(port)


def listener_address(listen: str) -> tuple[str, int]:
    """Where one of our listeners binds: an empty host (`:8080`) is loopback, never all
    interfaces by accident."""
    return parse_host_port(listen, default_host="127.0.0.1")


def connect_address(listen: str) -> tuple[str, int]:
    """Where to connect to one of our listeners: a wildcard bind is reached over loopback."""
    host, port = listener_address(listen)
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), port
