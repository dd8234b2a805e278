"""Reading a partners file into the policy model: TOML, validation (pydantic), lint.

A policy is one TOML file of `[[partners]]`. Loading it validates and lints it in one pass;
a file with any error never becomes a `Policy`, so a bad file can never replace a good one.
The lint refuses catch-alls (public suffixes, by the public-suffix list), raw numbers
without opt-in, unknown claims (the registry in `claims.py` says which exist) and unsafe
OAuth clients.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date
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

from ..claims import ASSERTION_INCLUDES, CLAIMS
from ..http import reserved_field
from ..names import is_token, normalise
from ..sourcemap import Loc, SourceMap, load_toml, parse_toml
from .model import (
    NV_READ,
    NV_VERIFY,
    OAUTH_SCOPES,
    PURPOSES,
    RAW_NUMBER_PURPOSES,
    ClaimSpec,
    Finding,
    OAuthClient,
    Partner,
    Policy,
    PolicyError,
    is_ip_literal,
    normalise_host,
    normalise_pattern,
    path_within,
    patterns_overlap,
    policy_version,
    reserved_fix,
)

# Top-level tables of linewarden.toml that a policy loader reads past: `policy check` accepts
# the main config file as well as a partners-only file.
CONFIG_SECTIONS = frozenset(
    {"proxy", "radius", "bindings", "ledger", "store", "web", "admin", "canary", "identity",
     "strip", "policy", "signing", "state_dir", "profiles", "numberverify"}
)

_PSL = PublicSuffixList()
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


def load_policy(path: str | Path) -> tuple[Policy, list[Finding]]:
    """Read, validate and lint a policy file. Raises PolicyError (or ConfigError)."""
    data, smap = load_toml(path)
    return compile_policy(data, smap, policy_version(Path(path).read_bytes()))


def parse_policy(text: str, name: str = "<policy>") -> tuple[Policy, list[Finding]]:
    data, smap = parse_toml(name, text)
    return compile_policy(data, smap, policy_version(text.encode()))



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
        line=smap.line_of(("partners", index)), oauth=_oauth(m.oauth),
        display_name=" ".join(m.display_name.split()),
    )


def _oauth(m: OAuthClientModel | None) -> OAuthClient | None:
    if m is None:
        return None
    return OAuthClient(m.client_id, m.redirect_uris, m.client_secret_sha256, m.public_key,
                       m.scopes)


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
            claim = CLAIMS.get(spec.claim)
            if claim is None:
                add("error", key, f"unknown claim '{spec.claim}' for header '{header}'",
                    f"use one of {', '.join(CLAIMS)}")
            elif claim.raw_number and not p.allow_raw_msisdn:
                add("error", key, f"header '{header}' sends the raw phone number without opt-in",
                    "use the 'pseudonym' claim, or set allow_raw_msisdn = true if the "
                    "contract requires the number")
            elif claim.raw_number:
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
        elif CLAIMS[name].raw_number and not allow_raw:
            add("error", key, "the assertion would carry the raw phone number without opt-in",
                "remove 'msisdn' from include, or set allow_raw_msisdn = true if the "
                "contract requires the number")
        elif CLAIMS[name].raw_number:
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
