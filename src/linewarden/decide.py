"""The decision core: one request head in, one `Decision` out. No I/O.

Read top to bottom, a request goes: check framing → find the destination → strip forged
identity and hop-by-hop fields → match the partner → render its claims → describe the
disclosure record. The data plane then records (or withholds) and forwards. Everything the
core needs arrives as arguments — the binding, the rules, the kill-switch state and the time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, cast

import httptools

from .bindings import Binding
from .claims import Secrets, render, subscriber_key
from .http import HOP_BY_HOP, connection_tokens
from .names import IdentityNames, has_alias_chars
from .policy.model import (
    Partner,
    Policy,
    UnsafePolicyError,
    header_name_problems,
    matchable_path,
    normalise_host,
)

# The token this gateway adds to Via (RFC 9110 §7.6.3); seeing it on input means a loop.
VIA_TOKEN = b"linewarden"
VIA_VALUE = b"1.1 " + VIA_TOKEN

DEFAULT_CONNECT_PORTS = frozenset({443})  # like Squid's SSL_ports: CONNECT is for TLS

Header = tuple[bytes, bytes]
# host_mismatch: an intercepted request whose Host does not resolve to the address the client
# actually connected to (proxy/intercept.py); never set by decide() itself.
Withheld = Literal["no_binding", "binding_unconfirmed", "stale_binding", "killswitch",
                   "no_claims", "opt_out", "host_mismatch"]


@dataclass(frozen=True)
class Settings:
    """Operator settings the core obeys; fixed at start-up, shared by every policy."""

    secrets: Secrets
    reject_alias_headers: bool = False  # 400 instead of silently dropping `X_MSISDN`
    extra_identity_names: tuple[str, ...] = ()
    extra_identity_suffixes: tuple[str, ...] = ()
    connect_ports: frozenset[int] = DEFAULT_CONNECT_PORTS
    # Where the data plane draws each request's `nonce` for decide() (an assertion's jti).
    # The core never calls it; the default draws nothing, so assertions are withheld.
    draw_nonce: Callable[[], bytes] = bytes


@dataclass(frozen=True)
class Rules:
    """A policy compiled with the settings. The data plane swaps one reference on reload,
    so a request sees the whole old rules or the whole new ones, never a mix."""

    policy: Policy
    settings: Settings
    names: IdentityNames = field(init=False)
    # Only a signed assertion carries a nonce (its jti): without one in the policy the data
    # plane draws none.
    needs_nonce: bool = field(init=False)
    # Header name (as spelled on the wire) -> what to do with it. Names repeat on every
    # request, so the per-name work (lower-case, alias check, loose match) runs once.
    _triage: dict[bytes, int] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # The lint refuses these already; a Policy built any other way (an embedding, a
        # fault hook) must not put a framing field on the wire either. Once, here: never
        # per request.
        unsafe = header_name_problems(self.policy)
        if unsafe:
            raise UnsafePolicyError(unsafe)
        names = self.policy.identity_names(self.settings.extra_identity_names,
                                           self.settings.extra_identity_suffixes)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "needs_nonce", any(
            spec.claim == "assertion" for p in self.policy.partners for spec in p.claims))

    def triage(self, name: bytes) -> int:
        kind = self._triage.get(name)
        if kind is None:
            kind = _classify(name, self.names)
            if len(self._triage) < _TRIAGE_MAX:
                self._triage[name] = kind
        return kind


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: str  # "1.1" or "1.0", as the parser reported it
    headers: Sequence[Header]


@dataclass(frozen=True, slots=True)
class DisclosureRecord:
    """What the ledger keeps: never a claim value, never the number."""

    time: float
    partner_id: str
    purpose: str
    host: str
    claims: tuple[str, ...]
    policy_version: str
    subscriber_key: str


class Destination(NamedTuple):  # a tuple: built per request, and a frozen dataclass is slower
    host: str  # normalised: lower case, no trailing dot, IPv6 in brackets
    port: int
    mode: Literal["forward", "transparent", "connect"]


@dataclass(slots=True)
class Decision:
    status: int = 0  # 0: forward; otherwise answer with this status and close
    reason: str = ""
    destination: Destination | None = None
    target: bytes = b""  # origin-form target for the upstream request line
    headers: list[Header] = field(default_factory=list)  # to forward, without identity
    identity: list[Header] = field(default_factory=list)  # only after the record is kept
    record: DisclosureRecord | None = None
    partner: Partner | None = None
    withheld: Withheld | None = None
    stripped: dict[str, int] = field(default_factory=dict)  # reason -> count, for metrics
    body: Literal["none", "length", "chunked"] = "none"
    upgrade: bool = False

    @property
    def forwarded(self) -> bool:
        return self.status == 0


def reject(status: int, reason: str, stripped: dict[str, int] | None = None) -> Decision:
    return Decision(status=status, reason=reason, stripped=stripped or {})


def decide(head: RequestHead, binding: Binding | None, rules: Rules, *,
           switch_tripped: bool, now: float, nonce: bytes = b"") -> Decision:
    """`nonce`: fresh random bytes (os.urandom(16)) from the caller, the `jti` of a signed
    assertion; the core draws no randomness itself. Without it, assertions are withheld."""
    fields = _Fields.collect(head.headers, rules)
    problem = _framing_problem(head, fields)
    if problem:
        return reject(400, problem)
    if any(VIA_TOKEN in v for v in fields.via):
        return reject(508, "request has already passed through this gateway (loop)")

    if head.method == b"CONNECT":
        return _connect(head, rules.settings)
    where = _destination(head, fields)
    if isinstance(where, Decision):
        return where
    destination, target, host_value, path = where

    if fields.alias_refused:
        return reject(400, "header name with '_', '.' or other alias characters refused "
                      "(identity headers cannot be spelled that way)", fields.stripped)
    decision = Decision(destination=destination, target=target, stripped=fields.stripped)
    decision.headers = [(b"Host", host_value), *fields.kept]
    decision.body = _framing(fields, decision.headers)
    if _websocket_upgrade(fields):
        decision.upgrade = True
        decision.headers += [(b"Connection", b"upgrade"),
                             *((b"Upgrade", v) for v in fields.upgrade)]
    decision.headers.append((b"Via", b", ".join([*fields.via, VIA_VALUE])))

    partner = rules.policy.matcher.match(destination.host, destination.port, path, now)
    if partner is not None:
        _enrich(decision, partner, binding, rules, switch_tripped, now, nonce)
    return decision


# ---------------------------------------------------------------- framing and destination

# What to do with a request field, by name. The first six are fields the core reads and
# then rebuilds itself; everything hop-by-hop is dropped outright (RFC 9110 §7.6.1).
KEEP, HOST, CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, UPGRADE, VIA = range(7)
HOP, STRIP_IDENTITY, STRIP_ALIAS, STRIP_ALIAS_IDENTITY = range(7, 11)
_SPECIAL = {b"host": HOST, b"content-length": CONTENT_LENGTH,
            b"transfer-encoding": TRANSFER_ENCODING, b"connection": CONNECTION,
            b"proxy-connection": CONNECTION, b"upgrade": UPGRADE, b"via": VIA}
_TRIAGE_MAX = 4096  # distinct names remembered per policy; a flood of random names can't grow it
# CR, LF or NUL in a value could smuggle a line past the stripping; llhttp refuses them
# already and this repeats the check (one regex scan: half the cost of three `in` tests).
_CONTROL = re.compile(rb"[\r\n\0]")
# Connection options that name no header of their own (RFC 9112 §9.6, §9.3).
_PLAIN_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})


def _classify(name: bytes, names: IdentityNames) -> int:
    lname = name.lower()
    special = _SPECIAL.get(lname)
    if special is not None:
        return special
    if lname in HOP_BY_HOP:
        return HOP
    if has_alias_chars(name):
        return STRIP_ALIAS_IDENTITY if names.is_identity(name) else STRIP_ALIAS
    return STRIP_IDENTITY if names.is_identity(name) else KEEP


@dataclass(slots=True)
class _Fields:
    """One pass over the request's fields: what the core must see, and what may go on."""

    host: list[bytes] = field(default_factory=list)
    content_length: list[bytes] = field(default_factory=list)
    transfer_encoding: list[bytes] = field(default_factory=list)
    connection: set[bytes] = field(default_factory=set)
    upgrade: list[bytes] = field(default_factory=list)
    via: list[bytes] = field(default_factory=list)
    kept: list[Header] = field(default_factory=list)  # end-to-end, not identity, not alias
    stripped: dict[str, int] = field(default_factory=dict)  # reason -> count, for metrics
    alias_refused: bool = False
    control_chars: bool = False

    @classmethod
    def collect(cls, headers: Sequence[Header], rules: Rules) -> _Fields:
        f = cls()
        connection: list[bytes] = []
        special = (None, f.host, f.content_length, f.transfer_encoding, connection, f.upgrade,
                   f.via)
        kept, known, control = f.kept, rules._triage, _CONTROL.search
        for name, value in headers:
            if control(value):
                f.control_chars = True
            kind = known.get(name)
            if kind is None:
                kind = rules.triage(name)
            if kind == KEEP:
                kept.append((name, value))
            elif kind < HOP:
                special[kind].append(value)  # type: ignore[union-attr]
            elif kind > HOP:
                f._strip(kind, rules.settings.reject_alias_headers)
        if connection:
            f.connection = connection_tokens(connection)
            named = f.connection - _PLAIN_OPTIONS
            if named:  # "Connection: X-Foo" makes X-Foo hop-by-hop too
                f.kept = [(n, v) for n, v in kept if n.lower() not in named]
        return f

    def _strip(self, kind: int, reject_alias: bool) -> None:
        reason = "alias" if kind == STRIP_ALIAS else "identity"
        self.stripped[reason] = self.stripped.get(reason, 0) + 1
        if kind != STRIP_IDENTITY and reject_alias:
            self.alias_refused = True


def _framing_problem(head: RequestHead, f: _Fields) -> str | None:
    """RFC 9112 §6.3: any doubt about where the body ends is a smuggling risk: refuse."""
    if head.version not in ("1.1", "1.0"):
        return "only HTTP/1.0 and HTTP/1.1 are supported"
    if f.transfer_encoding:
        if head.version == "1.0":
            return "Transfer-Encoding is not allowed in HTTP/1.0"
        if f.content_length:
            return "both Content-Length and Transfer-Encoding present"
        if len(f.transfer_encoding) != 1 or f.transfer_encoding[0].strip().lower() != b"chunked":
            return "only 'Transfer-Encoding: chunked' is accepted"
    if len(f.content_length) > 1:
        return "more than one Content-Length"
    if f.content_length and not f.content_length[0].strip().isdigit():
        return "Content-Length is not a number"
    if len(f.host) > 1:
        return "more than one Host header"
    if f.control_chars:
        return "control character in a header value"
    if not f.host and head.version == "1.1":
        return "HTTP/1.1 request without Host"
    return None


def _framing(f: _Fields, out: list[Header]) -> Literal["none", "length", "chunked"]:
    if f.transfer_encoding:
        out.append((b"Transfer-Encoding", b"chunked"))
        return "chunked"
    if f.content_length:
        length = f.content_length[0].strip().lstrip(b"0") or b"0"
        out.append((b"Content-Length", length))
        return "none" if length == b"0" else "length"
    return "none"


class ParsedURL(Protocol):
    """What `httptools.parse_url` returns, typed as it behaves: a part the URI lacks is
    None (its stub says bytes and int, which compiled code would enforce and fail on)."""

    schema: bytes | None
    host: bytes | None
    port: int | None
    path: bytes | None
    query: bytes | None
    userinfo: bytes | None


def parse_url(data: bytes) -> ParsedURL:
    return cast(ParsedURL, httptools.parse_url(data))


def _destination(head: RequestHead, f: _Fields
                 ) -> Decision | tuple[Destination, bytes, bytes, str | None]:
    """Absolute-form: the URI decides (RFC 9112 §3.2.2); origin-form: the Host header."""
    target = head.target
    if target.startswith(b"/") or target == b"*":
        mode: Literal["forward", "transparent"] = "transparent"
        authority = f.host[0] if f.host else b""
        try:
            url = parse_url(b"http://" + authority + b"/")
        except httptools.HttpParserInvalidURLError:
            return reject(400, "invalid Host header")
        if url.userinfo is not None or url.path != b"/":
            return reject(400, "invalid Host header")
        origin_target, raw_path = target, target.split(b"?", 1)[0]
    else:
        mode = "forward"
        try:
            url = parse_url(target)
        except httptools.HttpParserInvalidURLError:
            return reject(400, "invalid request target")
        if url.schema is None or url.schema.lower() != b"http":
            return reject(400, "only http:// URIs can be proxied; use CONNECT for https")
        if url.userinfo is not None:
            # RFC 9110 §4.2.4: userinfo in an http URI is deprecated and a phishing tool.
            return reject(400, "userinfo ('user@') in the request URI is refused")
        raw_path = url.path or b"/"
        origin_target = raw_path + (b"?" + url.query if url.query is not None else b"")
    raw_host = (url.host or b"").decode("latin-1")
    if ":" in raw_host:
        raw_host = f"[{raw_host}]"  # llhttp hands an IPv6 literal back without its brackets
    host = normalise_host(raw_host)
    if host is None:
        return reject(400, "invalid host name")
    port = url.port or 80
    host_value = host.encode() if port == 80 else f"{host}:{port}".encode()
    path = matchable_path(raw_path)
    return Destination(host, port, mode), origin_target, host_value, path


def _connect(head: RequestHead, settings: Settings) -> Decision:
    """CONNECT host:port: a blind tunnel. No enrichment is possible or attempted."""
    target = head.target
    host_part, sep, port_part = target.rpartition(b":")
    if not sep or not port_part.isdigit() or not 0 < int(port_part) < 65536:
        return reject(400, "CONNECT target must be host:port")
    host = normalise_host(host_part.decode("latin-1"))
    if host is None:
        return reject(400, "invalid host name in CONNECT target")
    port = int(port_part)
    if port not in settings.connect_ports:
        return reject(403, f"CONNECT to port {port} is not allowed")
    return Decision(destination=Destination(host, port, "connect"), target=target)


def _websocket_upgrade(f: _Fields) -> bool:
    """Only WebSocket may switch protocols: a tunnelled `h2c` upgrade would carry later
    requests past the stripping unseen (the "h2c smuggling" attack)."""
    if not f.upgrade or b"upgrade" not in f.connection:
        return False
    tokens = connection_tokens(f.upgrade)
    return tokens == {b"websocket"}


# ---------------------------------------------------------------- enrich

def _enrich(decision: Decision, partner: Partner, binding: Binding | None, rules: Rules,
            switch_tripped: bool, now: float, nonce: bytes) -> None:
    """Fail closed: any doubt about who the subscriber is, or whether we may disclose,
    leaves the request without identity."""
    decision.partner = partner
    if switch_tripped:
        decision.withheld = "killswitch"
        return
    if binding is None:
        decision.withheld = "no_binding"
        return
    if not binding.confirmed:  # the store lost writes since: maybe someone else's address
        decision.withheld = "binding_unconfirmed"
        return
    if not binding.live(now):
        decision.withheld = "stale_binding"
        return
    if binding.opted_out(partner.id):  # the subscriber's profile refuses this partner
        decision.withheld = "opt_out"
        return
    secrets = rules.settings.secrets
    identity: list[Header] = []
    claims: list[str] = []
    for spec in partner.claims:
        value = render(spec, partner, binding, secrets, now=now, nonce=nonce)
        if value is not None:
            identity.append((spec.header.encode("ascii"), value.encode("ascii")))
            # an assertion discloses what it carries too: the ledger must say so
            for claim in (spec.claim, *spec.include):
                if claim not in claims:
                    claims.append(claim)
    if not identity:
        decision.withheld = "no_claims"
        return
    decision.identity = identity
    assert decision.destination is not None
    decision.record = DisclosureRecord(
        time=now, partner_id=partner.id, purpose=partner.purpose,
        host=decision.destination.host, claims=tuple(claims),
        policy_version=rules.policy.version,
        subscriber_key=subscriber_key(secrets.ledger_key, binding.msisdn),
    )
