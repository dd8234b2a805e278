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

# ---------------------------------------------------------------- names a partner may not use
#
# A partner header is appended to the request the gateway forwards, after the client's own
# fields. Under any of these names it would not be "one more header" but would change how
# the message is framed, routed or authorised: a partner header `Content-Length` would put
# `Content-Length: 234-10` beside the real one (a framing desync), a `Cookie` one would
# replace the client's cookie, a `Host` one would make a second Host.
# The policy lint (policy/load.py) and `Rules` (decide.py) both read this.
# Compared lower-cased: field names are case-insensitive (RFC 9110 §5.1).
RESERVED_FIELDS: dict[str, str] = {
    # Hop-by-hop (RFC 9110 §7.6.1, RFC 9112 §9.6, §7.4) and message framing (RFC 9112 §6):
    # the gateway drops or rebuilds these itself; a second value desyncs the next hop.
    "connection": "a hop-by-hop field (RFC 9110 §7.6.1)",
    "keep-alive": "a hop-by-hop field (RFC 9110 §7.6.1)",
    "te": "a hop-by-hop field (RFC 9110 §10.1.4)",
    "trailer": "a hop-by-hop field (RFC 9110 §6.6.2)",
    "content-length": "a framing field (RFC 9112 §6.2): a second value desyncs the origin",
    "transfer-encoding": "a framing field (RFC 9112 §6.1): a second value desyncs the origin",
    "upgrade": "a hop-by-hop field that switches protocols (RFC 9110 §7.8)",
    "expect": "it changes how the body is sent (RFC 9110 §10.1.1)",
    "max-forwards": "proxies consume it (RFC 9110 §7.6.2)",
    # Routing and the client's own credentials: a partner value replaces or doubles them.
    "host": "it routes the request (RFC 9110 §7.2): a second Host is a smuggling vector",
    "cookie": "it carries the client's own session (RFC 6265 §5.4)",
    "authorization": "it carries the client's own credentials (RFC 9110 §11.6.2)",
    # Forwarding metadata the gateway writes or origins trust for the client's address.
    "via": "the gateway writes it (RFC 9110 §7.6.3) and detects loops by it",
    "forwarded": "origins trust it for the client's address (RFC 7239)",
    # What the gateway itself writes in its own responses (error_response below).
    "cache-control": "the gateway writes it (RFC 9111 §5.2)",
}
# Whole families, by prefix. `content-` is representation metadata (RFC 9110 §8: Type,
# Encoding, Language, Location, Range; and Content-Length, RFC 9112 §6.2): it describes the
# client's body, and a partner value beside the client's makes a singleton field ambiguous
# (RFC 9110 §5.3) or states something false about a body the partner never saw. Content-Type
# is also what the gateway writes in its own error responses. No partner needs any of them.
RESERVED_PREFIXES: dict[str, str] = {
    "content-": "representation metadata of the client's body (RFC 9110 §8)",
    "proxy-": "a proxy's own field (RFC 9110 §11.7, Proxy-Connection from RFC 7230 §A.1.2)",
    "x-forwarded-": "origins trust X-Forwarded-* for the client's address and scheme "
                    "(the de-facto RFC 7239 predecessors)",
}


def reserved_field(name: str) -> str | None:
    """Why a partner header may not be called `name` (any spelling), or None if it may."""
    if not name.isascii():
        return None  # not a token at all: refused as such (and str.lower maps K to k)
    lname = name.lower()
    reason = RESERVED_FIELDS.get(lname)
    if reason is not None:
        return reason
    return next((why for prefix, why in RESERVED_PREFIXES.items()
                 if lname.startswith(prefix)), None)


REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 400: "Bad Request",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    421: "Misdirected Request",
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
