"""Partners: who may receive which identity, on which hosts.

A policy is one TOML file of `[[partners]]`. Loading it validates and lints it in one pass;
a file with any error never becomes a `Policy`, so a bad file can never replace a good one.
The compiled `HostMatcher` answers "which partner owns this host?" with one dict hit per
label, never a regex and never a substring match (the O2 failure was a match-everything).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from publicsuffixlist import PublicSuffixList
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)

from .http import reserved_field
from .names import IdentityNames, is_token, normalise
from .sourcemap import ConfigError, ConfigErrors, Loc, SourceMap, load_toml, parse_toml

PURPOSES = ("age_verification", "billing", "own_services", "fraud_prevention")
CLAIMS = ("msisdn", "pseudonym", "age_over_18", "operator", "assertion")
# What an `assertion` may carry besides its `sub` (the pairwise pseudonym): `include = [...]`.
ASSERTION_INCLUDES = ("age_over_18", "operator", "msisdn")
# Number Verification (docs/numberverify.md): the scopes a `[partners.oauth]` client may hold.
# Reading the number itself is the raw number again, so only purposes that need it may.
NV_VERIFY = "number-verification:verify"
NV_READ = "number-verification:device-phone-number:read"
OAUTH_SCOPES = (NV_VERIFY, NV_READ)
RAW_NUMBER_PURPOSES = ("billing", "own_services")

# Top-level tables of linewarden.toml that a policy loader reads past: `policy check` accepts
# the main config file as well as a partners-only file.
CONFIG_SECTIONS = frozenset(
    {"proxy", "radius", "bindings", "ledger", "store", "web", "admin", "canary", "identity",
     "strip", "policy", "signing", "state_dir", "profiles", "numberverify"}
)

_PSL = PublicSuffixList()
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class ClaimSpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    claim: str
    format: Literal["e164", "+e164"] | None = None
    include: list[str] | None = None  # assertion only: claims signed into the token


class OAuthClientModel(BaseModel):
    """`[partners.oauth]`: the partner as an OAuth 2.0 client of the Number Verification API."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    client_id: str
    redirect_uris: tuple[str, ...] = Field(min_length=1)
    client_secret_sha256: str = ""  # hex SHA-256 of the secret: the file never holds it
    public_key: str = ""  # PEM, for private_key_jwt client authentication (RFC 7523)
    scopes: tuple[str, ...] = Field(min_length=1)


class PartnerModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    # What subscribers read on /me ("Acme Games"); the id when empty.
    display_name: str = Field(default="", max_length=80)
    purpose: str
    hosts: list[str] = Field(min_length=1)
    paths: list[str] = []
    ports: list[int] = []
    expires: date | None = None
    allow_raw_msisdn: bool = False
    headers: dict[str, str | ClaimSpecModel] = {}  # lint: headers or oauth, not neither
    oauth: OAuthClientModel | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _headers_or_oauth(cls, data: Any,
                          handler: ModelWrapValidatorHandler[PartnerModel]) -> PartnerModel:
        """`headers` stays required unless the partner is an OAuth client (reported with
        the other missing keys, not after them)."""
        missing = isinstance(data, dict) and "headers" not in data and "oauth" not in data
        extra: list[Any] = [{"type": "missing", "loc": ("headers",), "input": data}] * missing
        try:
            model = handler(data)
        except ValidationError as exc:
            if not extra:
                raise
            kept: list[Any] = [{k: e[k] for k in ("type", "loc", "input", "ctx") if k in e}
                               for e in exc.errors()]
            raise ValidationError.from_exception_data(cls.__name__, [*kept, *extra]) from None
        if extra:
            raise ValidationError.from_exception_data(cls.__name__, extra)
        return model


class PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partners: list[PartnerModel] = []


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    header: str  # as the partner wants it spelled on the wire
    claim: str
    format: str = "e164"
    include: tuple[str, ...] = ()  # assertion only: claims carried inside the signed token


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
    oauth: OAuthClientModel | None = None
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


def load_policy(path: str | Path) -> tuple[Policy, list[Finding]]:
    """Read, validate and lint a policy file. Raises PolicyError (or ConfigError)."""
    data, smap = load_toml(path)
    return compile_policy(data, smap, policy_version(Path(path).read_bytes()))


def parse_policy(text: str, name: str = "<policy>") -> tuple[Policy, list[Finding]]:
    data, smap = parse_toml(name, text)
    return compile_policy(data, smap, policy_version(text.encode()))


def policy_version(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def compile_policy(data: Mapping[str, Any], smap: SourceMap,
                   version: str) -> tuple[Policy, list[Finding]]:
    body = {k: v for k, v in data.items() if k not in CONFIG_SECTIONS}
    findings: list[Finding] = []
    try:
        PolicyModel.model_validate({**body, "partners": []})
    except ValidationError as exc:
        findings += [_from_pydantic(err, smap, ()) for err in exc.errors()]
    raw = body.get("partners", [])
    if not isinstance(raw, list):
        raise PolicyError([Finding("error", smap.path, smap.line_of(("partners",)), None,
                                   "'partners' must be an array of tables", "use [[partners]]")])
    models: list[PartnerModel] = []
    for i, item in enumerate(raw):
        try:
            models.append(PartnerModel.model_validate(item))
        except ValidationError as exc:
            partner = str(item.get("id")) if isinstance(item, dict) else None
            findings += [_from_pydantic(err, smap, ("partners", i), partner)
                         for err in exc.errors()]
    if not findings:  # lint needs every partner parsed, so it reports positions correctly
        findings = lint(models, smap)
    if any(f.level == "error" for f in findings):
        raise PolicyError(findings)
    partners = tuple(_partner(i, m, smap) for i, m in enumerate(models))
    return Policy(partners, version, smap.path), findings


def _from_pydantic(err: Any, smap: SourceMap, base: Loc, partner: str | None = None) -> Finding:
    loc: Loc = tuple(err["loc"])
    if loc and loc[-1] in ("str", "ClaimSpecModel"):
        loc = loc[:-1]  # union branch names are noise to an operator
    key = ".".join(str(p) for p in loc)
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        message, fix = f"unknown key '{key}'", "remove it or check its spelling"
    elif kind == "missing":
        message, fix = f"missing required key '{key}'", f"add {loc[-1]} = ..."
    else:
        message, fix = f"'{key}': {err['msg']}", ""
    return Finding("error", smap.path, smap.line_of((*base, *loc)), partner, message, fix)


def _claim_spec(header: str, value: str | ClaimSpecModel) -> ClaimSpec:
    if isinstance(value, str):
        return ClaimSpec(header, value)
    return ClaimSpec(header, value.claim, value.format or "e164", tuple(value.include or ()))


def _partner(index: int, m: PartnerModel, smap: SourceMap) -> Partner:
    hosts = tuple(normalise_pattern(h) or h for h in m.hosts)
    return Partner(
        id=m.id, purpose=m.purpose, hosts=hosts, paths=tuple(m.paths), ports=frozenset(m.ports),
        expires=m.expires, allow_raw_msisdn=m.allow_raw_msisdn,
        claims=tuple(_claim_spec(h, v) for h, v in m.headers.items()),
        line=smap.line_of(("partners", index)), oauth=m.oauth,
        display_name=" ".join(m.display_name.split()),
    )


def normalise_pattern(pattern: str) -> str | None:
    if pattern.startswith("*."):
        rest = normalise_host(pattern[2:])
        return None if rest is None or is_ip_literal(rest) else "*." + rest
    return normalise_host(pattern)


# ---------------------------------------------------------------- lint

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


def lint(partners: Sequence[PartnerModel], smap: SourceMap) -> list[Finding]:
    out: list[Finding] = []
    seen_ids: dict[str, int] = {}
    seen_clients: set[str] = set()
    for i, p in enumerate(partners):
        def add(level: Literal["error", "warning"], key: Loc, message: str, fix: str = "",
                i: int = i, p: PartnerModel = p) -> None:
            out.append(Finding(level, smap.path, smap.line_of(("partners", i, *key)), p.id,
                               message, fix))

        if not _ID.match(p.id):
            add("error", ("id",), f"id '{p.id}' is not a valid partner id",
                "use lower-case letters, digits, '-', '_' or '.'")
        if p.id in seen_ids:
            first = seen_ids[p.id]
            add("error", ("id",), f"duplicate partner id '{p.id}' (first at partners[{first}])",
                "give every partner a unique id")
        seen_ids.setdefault(p.id, i)
        if p.purpose not in PURPOSES:
            add("error", ("purpose",), f"unknown purpose '{p.purpose}'",
                f"use one of {', '.join(PURPOSES)}")
        for host in p.hosts:
            problem = host_problem(host)
            if problem:
                add("error", ("hosts",), problem[0], problem[1])
        for path in p.paths:
            if not path.startswith("/") or any(s in (".", "..") for s in path.split("/")) \
                    or "%" in path or "?" in path or "#" in path:
                add("error", ("paths",), f"path prefix '{path}' is not a plain absolute path",
                    "start with '/', no dot segments, '%', '?' or '#'")
        for port in p.ports:
            if not 1 <= port <= 65535:
                add("error", ("ports",), f"port {port} is out of range", "use 1-65535")
        for header, value in p.headers.items():
            spec = _claim_spec(header, value)
            key: Loc = ("headers", header)
            if not is_token(header) or "_" in header or "." in header:
                add("error", key, f"header name '{header}' is not a valid token",
                    "use letters, digits and '-' only")
            elif (why := reserved_field(header)) is not None:
                add("error", key, f"header name '{header}' is reserved: {why}",
                    reserved_fix(p.id, spec.claim))
            if spec.claim not in CLAIMS:
                add("error", key, f"unknown claim '{spec.claim}' for header '{header}'",
                    f"use one of {', '.join(CLAIMS)}")
            if spec.claim == "msisdn" and not p.allow_raw_msisdn:
                add("error", key, f"header '{header}' sends the raw phone number without opt-in",
                    "use the 'pseudonym' claim, or set allow_raw_msisdn = true if the "
                    "contract requires the number")
            elif spec.claim == "msisdn":
                add("warning", key, f"header '{header}' sends the raw phone number",
                    "prefer 'pseudonym', or 'assertion' (signed, short-lived)")
            _lint_assertion(spec, p.allow_raw_msisdn, key, add)
        if sum(1 for v in p.headers.values() if _claim_spec("", v).claim == "assertion") > 1:
            add("error", ("headers",), "more than one 'assertion' header",
                "send one assertion and list what it carries in its include = [...]")
        if not p.headers and p.oauth is None:
            add("error", ("headers",), "the partner has no [partners.headers] and no "
                "[partners.oauth]", "add the headers it receives, or its OAuth client")
        if p.oauth is not None:
            _lint_oauth(p, p.oauth, seen_clients, add)
        normalised = [normalise(h) for h in p.headers]
        if len(set(normalised)) != len(normalised):
            add("error", ("headers",), "two header names differ only in case or punctuation",
                "keep one spelling per header")
    out.extend(_overlaps(partners, smap))
    return out


def _lint_assertion(spec: ClaimSpec, allow_raw: bool, key: Loc,
                    add: Callable[[Literal["error", "warning"], Loc, str, str], None]) -> None:
    """`include` names what the signed token carries besides `sub`; nothing else takes it."""
    if spec.claim != "assertion":
        if spec.include:
            add("error", key, f"'include' applies only to the 'assertion' claim, not "
                f"'{spec.claim}'", "remove include, or use claim = \"assertion\"")
        return
    for name in spec.include:
        if name == "pseudonym":
            add("error", key, "'pseudonym' in include: the assertion's 'sub' already is the "
                "pairwise pseudonym", "remove it from include")
        elif name not in ASSERTION_INCLUDES:
            add("error", key, f"unknown claim '{name}' in the assertion's include",
                f"use any of {', '.join(ASSERTION_INCLUDES)}")
        elif name == "msisdn" and not allow_raw:
            add("error", key, "the assertion would carry the raw phone number without opt-in",
                "remove 'msisdn' from include, or set allow_raw_msisdn = true if the "
                "contract requires the number")
        elif name == "msisdn":
            add("warning", key, "the assertion carries the raw phone number",
                "the signed 'sub' pseudonym is usually enough")
    if len(set(spec.include)) != len(spec.include):
        add("error", key, "a claim is listed twice in include", "list each claim once")


_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


def _lint_oauth(p: PartnerModel, o: OAuthClientModel, seen: set[str],
                add: Callable[[Literal["error", "warning"], Loc, str, str], None]) -> None:
    key: Loc = ("oauth",)
    if not _CLIENT_ID.match(o.client_id):
        add("error", (*key, "client_id"), f"client_id '{o.client_id}' is not valid",
            "use 1-128 letters, digits, '.', '_', '~' or '-'")
    if o.client_id in seen:
        add("error", (*key, "client_id"), f"client_id '{o.client_id}' is used by another "
            "partner", "give every OAuth client its own client_id")
    seen.add(o.client_id)
    if bool(o.client_secret_sha256) == bool(o.public_key):
        add("error", key, "give exactly one of client_secret_sha256 and public_key", "")
    if o.client_secret_sha256 and not re.fullmatch(r"[0-9a-f]{64}", o.client_secret_sha256):
        add("error", (*key, "client_secret_sha256"), "client_secret_sha256 is not 64 "
            "lower-case hex digits", "sha256sum of the secret, e.g. printf %s SECRET | sha256sum")
    if o.public_key and not _is_public_key(o.public_key):
        add("error", (*key, "public_key"), "public_key is not a PEM public key",
            "paste the partner's '-----BEGIN PUBLIC KEY-----' block")
    for scope in o.scopes:
        if scope not in OAUTH_SCOPES:
            add("error", (*key, "scopes"), f"unknown scope '{scope}'",
                f"use {' and/or '.join(OAUTH_SCOPES)}")
    if NV_READ in o.scopes and not (p.allow_raw_msisdn and p.purpose in RAW_NUMBER_PURPOSES):
        add("error", (*key, "scopes"), f"'{NV_READ}' hands over the raw phone number",
            f"use '{NV_VERIFY}' (a yes/no answer), or for purposes "
            f"{', '.join(RAW_NUMBER_PURPOSES)} set allow_raw_msisdn = true")
    elif NV_READ in o.scopes:
        add("warning", (*key, "scopes"), f"'{NV_READ}' hands over the raw phone number",
            f"'{NV_VERIFY}' answers yes/no without it")
    for uri in o.redirect_uris:
        problem = _redirect_problem(uri, p.hosts)
        if problem:
            add("error", (*key, "redirect_uris"), f"redirect URI '{uri}': {problem}", "")


def _redirect_problem(uri: str, hosts: Sequence[str]) -> str | None:
    """RFC 6749 §3.1.2: absolute, no fragment; https, or http on loopback (RFC 8252 §7.3);
    on one of the partner's own hosts, so a code never goes to somebody else's site."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        host = normalise_host(parts.hostname or "")
    except ValueError:
        return "not a URI"
    if parts.fragment or "#" in uri:
        return "has a fragment (RFC 6749 §3.1.2)"
    if host is None or parts.scheme not in ("https", "http"):
        return "is not an absolute https:// URI"
    loopback = host in ("localhost", "[::1]") or host.startswith("127.")
    if parts.scheme == "http" and not loopback:
        return "http:// is allowed only for loopback (RFC 8252 §7.3); use https://"
    patterns = [normalise_pattern(h) for h in hosts]
    if not loopback and not any(pat and patterns_overlap(pat, host) for pat in patterns):
        return "its host is not one of the partner's hosts"
    return None


def _is_public_key(pem: str) -> bool:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        return False
    return True


def host_problem(host: str) -> tuple[str, str] | None:
    """Why a host pattern is refused, with the fix; None if it is acceptable."""
    if host in ("*", "*.") or (host.startswith("*") and not host.startswith("*.")):
        return f"host '{host}' matches every site", "list the partner's exact host names"
    if "*" in host[1:]:
        return f"host '{host}' has a wildcard that is not a leading '*.'", "use '*.example.com'"
    pattern = normalise_pattern(host)
    if pattern is None:
        return f"host '{host}' is not a valid host name or IP address", \
            "use an ASCII (punycode) name such as 'partner.example.com'"
    name = pattern[2:] if pattern.startswith("*.") else pattern
    if not is_ip_literal(name) and _PSL.is_public(name):
        return f"host '{host}' is a public suffix and would match unrelated sites", \
            "list the partner's own domain, e.g. '*.partner.example.com'"
    return None


def _overlaps(partners: Sequence[PartnerModel], smap: SourceMap) -> list[Finding]:
    """A host claimed by two partners whose ports and paths also overlap is ambiguous."""
    out: list[Finding] = []
    for i, a in enumerate(partners):
        for j in range(i + 1, len(partners)):
            b = partners[j]
            if not _scopes_overlap(a, b):
                continue
            for ha in a.hosts:
                for hb in b.hosts:
                    pa, pb = normalise_pattern(ha), normalise_pattern(hb)
                    if pa and pb and patterns_overlap(pa, pb):
                        out.append(Finding(
                            "error", smap.path, smap.line_of(("partners", j, "hosts")), b.id,
                            f"host '{hb}' is also claimed by partner '{a.id}' ('{ha}')",
                            "give each host to one partner, or separate them by paths/ports"))
    return out


def _scopes_overlap(a: PartnerModel, b: PartnerModel) -> bool:
    if a.ports and b.ports and not set(a.ports) & set(b.ports):
        return False
    if a.paths and b.paths:
        return any(path_within(x, y) or path_within(y, x) for x in a.paths for y in b.paths)
    return True


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
