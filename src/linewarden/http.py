"""Small pure HTTP/1.1 helpers shared by the decision core and the data plane."""

from __future__ import annotations

from collections.abc import Iterable

# RFC 9110 §7.6.1: hop-by-hop fields, plus the legacy ones every proxy also drops.
# Proxy-Authorization is consumed by the proxy and must not travel on (RFC 9110 §11.7.2).
HOP_BY_HOP = frozenset({
    b"connection", b"proxy-connection", b"keep-alive", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate",
})

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 400: "Bad Request",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    413: "Content Too Large", 414: "URI Too Long", 417: "Expectation Failed",
    431: "Request Header Fields Too Large", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    508: "Loop Detected",
}


def connection_tokens(values: Iterable[bytes]) -> set[bytes]:
    """The lower-cased option names listed in Connection header values (RFC 9110 §7.6.1)."""
    tokens: set[bytes] = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


def serialize_head(start_line: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    parts = [start_line, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def error_response(status: int, message: str, *, close: bool = True) -> bytes:
    """A short plain-text response the gateway itself produces (never echoes identity)."""
    body = (message.rstrip() + "\n").encode("utf-8", "replace")
    headers = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Cache-Control", b"no-store"),
    ]
    if close:
        headers.append((b"Connection", b"close"))
    reason = REASONS.get(status, "Error")
    return serialize_head(f"HTTP/1.1 {status} {reason}".encode(), headers) + body
