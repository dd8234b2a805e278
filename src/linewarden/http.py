"""Small pure HTTP/1.1 helpers shared by the decision core and the data plane."""

from __future__ import annotations

import re
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


# ---------------------------------------------------------------- response heads, verbatim
#
# A response head is relayed as the origin sent it, minus hop-by-hop lines: no parser
# callback per field, no re-serialisation. llhttp (strict) has validated it first, so every
# line ends in CRLF, names have no whitespace before the colon, and there is no obs-fold.

HAS_LENGTH, HAS_TRANSFER_ENCODING, HAS_CONNECTION, HAS_HOP_BY_HOP = 1, 2, 4, 8
_FIELD_KIND = {name: HAS_HOP_BY_HOP for name in HOP_BY_HOP} | {
    b"content-length": HAS_LENGTH, b"transfer-encoding": HAS_TRANSFER_ENCODING,
    b"connection": HAS_CONNECTION}
# Over the lower-cased head: one C-level scan finds every field the proxy cares about,
# with its value (llhttp allows no CR inside one).
_FIELD = re.compile(rb"\r\n(" + b"|".join(re.escape(n) for n in sorted(_FIELD_KIND))
                    + rb"):([^\r]*)")
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"keep-alive, close"})


def split_head(head: bytes) -> tuple[int, bytes]:
    """For a raw response head: the HAS_* bits of the framing and hop-by-hop fields it
    has, and its header lines (status line and final CRLF cut off) minus hop-by-hop fields
    and any field its Connection header names (RFC 9110 §7.6.1)."""
    low = head.lower()
    fields, pieces, at, named = 0, [], low.index(b"\r\n") + 2, False
    for match in _FIELD.finditer(low):
        kind = _FIELD_KIND[match[1]]
        fields |= kind
        if kind == HAS_LENGTH:
            continue
        if kind == HAS_CONNECTION and match[2].strip() not in _PLAIN_CONNECTION:
            named = True
        pieces.append(head[at:match.start() + 2])
        at = match.end() + 2
    if not pieces:
        return fields, head[at:-2]
    pieces.append(head[at:-2])
    lines = b"".join(pieces)
    if named:  # rare: a Connection header naming end-to-end-looking fields
        tokens = connection_tokens(m[1] for m in _CONNECTION_VALUE.finditer(low))
        lines = b"".join(line + b"\r\n" for line in lines.split(b"\r\n")[:-1]
                         if line.partition(b":")[0].strip().lower() not in tokens)
    return fields, lines


_CONNECTION_VALUE = re.compile(rb"\r\nconnection:([^\r]*)")
_UPGRADE_VALUE = re.compile(rb"\r\nupgrade:[ \t]*([^\r]*?)[ \t]*\r\n", re.IGNORECASE)


def upgrade_values(head: bytes) -> list[bytes]:
    """The Upgrade header values of a raw head (for relaying a 101)."""
    return _UPGRADE_VALUE.findall(head)


def status_reason(head: bytes) -> bytes:
    """The reason phrase of a raw response head's status line (may be empty)."""
    parts = head[:head.index(b"\r\n")].split(b" ", 2)
    return parts[2] if len(parts) == 3 else b""
