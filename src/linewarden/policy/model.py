"""The partner policy as plain data: who may receive which identity, on which hosts.

Pure: no TOML, no pydantic, no public-suffix list (`policy.load` reads and lints files into
this model). The compiled `HostMatcher` answers "which partner owns this host?" with one dict
hit per label, never a regex and never a substring match (the O2 failure was a
match-everything). What each claim is and how it renders is the registry in `claims.py`.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from ..fileerrors import ConfigError, ConfigErrors
from ..http import reserved_field
from ..names import IdentityNames, is_token

PURPOSES = ("age_verification", "billing", "own_services", "fraud_prevention")
# Number Verification (docs/numberverify.md): the scopes a `[partners.oauth]` client may hold.
# Reading the number itself is the raw number again, so only purposes that need it may.
NV_VERIFY = "number-verification:verify"
NV_READ = "number-verification:device-phone-number:read"
OAUTH_SCOPES = (NV_VERIFY, NV_READ)
RAW_NUMBER_PURPOSES = ("billing", "own_services")

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    header: str  # as the partner wants it spelled on the wire
    claim: str
    format: str = "e164"
    include: tuple[str, ...] = ()  # assertion only: claims carried inside the signed token


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """`[partners.oauth]`: the partner as an OAuth 2.0 client of the Number Verification API."""

    client_id: str
    redirect_uris: tuple[str, ...]
    client_secret_sha256: str = ""  # hex SHA-256 of the secret: the file never holds it
    public_key: str = ""  # PEM, for private_key_jwt client authentication (RFC 7523)
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Partner:
    id: str
    purpose: str
    hosts: tuple[str, ...]
    paths: tuple[str, ...]
    ports: frozenset[int]
    expires: date | None
    allow_raw_msisdn: bool
    claims: tuple[ClaimSpec, ...]
    line: int | None = None
    oauth: OAuthClient | None = None
    display_name: str = ""

    @property
    def name(self) -> str:
        """The partner as subscribers read it: its display_name, else its id."""
        return self.display_name or self.id

    @property
    def expires_at(self) -> float | None:
        """Active through the whole `expires` day (UTC); inactive from the next midnight."""
        if self.expires is None:
            return None
        end = datetime(self.expires.year, self.expires.month, self.expires.day, tzinfo=UTC)
        return (end + timedelta(days=1)).timestamp()

    def active(self, now: float) -> bool:
        expires_at = self.expires_at
        return expires_at is None or now < expires_at

    def covers(self, port: int, path: str | None) -> bool:
        """`path` is None when it is ambiguous: path-scoped partners then never match."""
        if self.ports and port not in self.ports:
            return False
        if not self.paths:
            return True
        return path is not None and any(path_within(path, prefix) for prefix in self.paths)


def path_within(path: str, prefix: str) -> bool:
    """Segment-aware prefix: `/billing` covers `/billing` and `/billing/x`, not `/billingx`."""
    if prefix == "/" or path == prefix:
        return True
    return path.startswith(prefix if prefix.endswith("/") else prefix + "/")


# Anything that could make the origin see another path than the one we match: escapes,
# backslashes, empty segments, dot segments (RFC 3986 §5.2.4), non-ASCII.
_AMBIGUOUS_PATH = re.compile(rb"%|\\|//|(?:^|/)\.\.?(?:/|$)|[^\x00-\x7f]")


def matchable_path(raw: bytes) -> str | None:
    """The path for partner `paths` matching, or None if it could mean something else
    to the origin (dot segments, encoded '/', '.' or '%'): then path-scoped partners fail
    closed rather than guess how the origin normalises."""
    if _AMBIGUOUS_PATH.search(raw):
        return None
    return raw.decode("ascii")


# ---------------------------------------------------------------- hosts

@functools.lru_cache(maxsize=8192)  # hosts repeat across requests; bounded for random ones
def normalise_host(host: str) -> str | None:
    """Canonical host for matching, or None if it is not a valid host name or IP literal.

    Case-insensitive, one trailing dot ignored (RFC 1034 absolute name), IPv6 literals in
    compressed bracket form. Non-ASCII is refused: a URI carries IDNs as punycode.
    """
    return _normalise_host(host)


def _normalise_host(host: str) -> str | None:
    if not host or not host.isascii():
        return None
    host = host.lower()
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > 253:
        return None
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    return host


def is_ip_literal(host: str) -> bool:
    if host.startswith("["):
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


class HostMatcher:
    """Exact names in one dict; `*.suffix` wildcards found by walking up the labels."""

    __slots__ = ("_exact", "_wildcards")

    def __init__(self, partners: Iterable[Partner]) -> None:
        self._exact: dict[str, list[Partner]] = {}
        self._wildcards: dict[str, list[Partner]] = {}
        for partner in partners:
            for pattern in partner.hosts:
                if pattern.startswith("*."):
                    self._wildcards.setdefault(pattern[2:], []).append(partner)
                else:
                    self._exact.setdefault(pattern, []).append(partner)

    def candidates(self, host: str) -> list[Partner]:
        """Partners whose host patterns cover `host` (already normalised), most specific first."""
        found = list(self._exact.get(host, ()))
        if not self._wildcards or is_ip_literal(host):
            return found
        rest = host
        while True:
            dot = rest.find(".")
            if dot < 0:
                return found
            rest = rest[dot + 1 :]
            found.extend(self._wildcards.get(rest, ()))

    def match(self, host: str, port: int, path: str | None, now: float) -> Partner | None:
        for partner in self.candidates(host):
            if partner.active(now) and partner.covers(port, path):
                return partner
        return None


def normalise_pattern(pattern: str) -> str | None:
    if pattern.startswith("*."):
        rest = normalise_host(pattern[2:])
        return None if rest is None or is_ip_literal(rest) else "*." + rest
    return normalise_host(pattern)



def patterns_overlap(a: str, b: str) -> bool:
    """Could one host match both patterns?"""
    if a == b:
        return True
    if a.startswith("*.") and b.startswith("*."):
        return a[1:].endswith(b[1:]) or b[1:].endswith(a[1:])
    if a.startswith("*."):
        return b.endswith(a[1:])
    if b.startswith("*."):
        return a.endswith(b[1:])
    return False


# ---------------------------------------------------------------- the policy

@dataclass(frozen=True)
class Policy:
    partners: tuple[Partner, ...]
    version: str  # sha256 of the file bytes: ledger rows say which policy disclosed
    source: str = "<embedded>"
    matcher: HostMatcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matcher", HostMatcher(self.partners))

    @property
    def header_names(self) -> frozenset[str]:
        """Every header name a partner renders; clients may never send these themselves."""
        return frozenset(spec.header for p in self.partners for spec in p.claims)

    def identity_names(self, extra_names: Iterable[str] = (),
                       extra_suffixes: Iterable[str] = ()) -> IdentityNames:
        return IdentityNames((*self.header_names, *extra_names), extra_suffixes)

    def get(self, partner_id: str) -> Partner | None:
        return next((p for p in self.partners if p.id == partner_id), None)


@dataclass(frozen=True)
class Finding:
    """One lint result. Errors refuse the file; warnings are printed and let it pass."""

    level: Literal["error", "warning"]
    path: str
    line: int | None
    partner: str | None
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        who = f" partner '{self.partner}':" if self.partner else ""
        tail = f" (fix: {self.fix})" if self.fix else ""
        return f"{where}:{who} {self.level}: {self.message}{tail}"


class PolicyError(ConfigErrors):
    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        Exception.__init__(self, "\n".join(str(f) for f in self.findings))
        self.errors = [ConfigError(f.path, f.line, f.message, f.fix) for f in self.findings]


class UnsafePolicyError(PolicyError, ValueError):
    """A policy the data plane refuses to run (a ValueError, so `serve` reports it as a
    reason not to start rather than a crash)."""


def policy_version(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]



# ---------------------------------------------------------------- header names

def reserved_fix(partner_id: str, claim: str) -> str:
    """The fix for a reserved partner header name: a name of the partner's own."""
    words = "-".join(w.capitalize() for w in re.split(r"[^A-Za-z0-9]+",
                                                        f"{partner_id} {claim}") if w)
    return f"agree a header name of its own with partner '{partner_id}', e.g. 'X-{words}'"


def header_name_problems(policy: Policy) -> list[Finding]:
    """Partner header names that are no token or that the gateway owns
    (http.RESERVED_FIELDS), for a policy that may not have come through `lint`: the data
    plane's second check."""
    return [Finding("error", policy.source, p.line, p.id,
                    f"header name '{spec.header}' is refused: {why}",
                    reserved_fix(p.id, spec.claim))
            for p in policy.partners for spec in p.claims
            if (why := _unsafe_name(spec.header)) is not None]


def _unsafe_name(header: str) -> str | None:
    if not is_token(header) or "_" in header or "." in header:
        return "not a valid token (RFC 9110 §5.1)"
    return reserved_field(header)
