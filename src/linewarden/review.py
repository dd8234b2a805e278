"""What a policy exposes: `explain` one host, `diff` two versions.

Both answer the operator's question before a change goes live: which partner would get
which identity, and what a new file newly exposes (the O2 failure was a change nobody
reviewed for exposure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .claims import CLAIMS, PRIVACY_LEVELS
from .policy.model import (
    NV_READ,
    ClaimSpec,
    Partner,
    Policy,
    matchable_path,
    normalise_host,
    path_within,
)


def _carried(spec: ClaimSpec) -> tuple[str, ...]:
    """What one header discloses: an assertion carries its `sub` pseudonym and `include`."""
    return ("pseudonym", *spec.include) if spec.claim == "assertion" else (spec.claim,)


def _formatted(spec: ClaimSpec) -> bool:
    """The header carries the number, so its `format` matters."""
    return any(CLAIMS[name].raw_number for name in _carried(spec) if name in CLAIMS)


def describe_claim(spec: ClaimSpec) -> str:
    fmt = f", format {spec.format}" if _formatted(spec) else ""
    inside = f" carrying {', '.join(spec.include)}" if spec.include else ""
    claim = CLAIMS.get(spec.claim)
    privacy = claim.privacy if claim is not None else spec.claim
    privacy += "".join(f" + {CLAIMS[name].privacy}" for name in spec.include
                       if name in CLAIMS and CLAIMS[name].raw_number)
    return f"{spec.header}: {spec.claim}{inside}{fmt} [{privacy}]"


def privacy_level(partner: Partner) -> str:
    """The most revealing claim a partner gets: raw number > pseudonym > yes/no."""
    levels = {CLAIMS[name].level for c in partner.claims for name in _carried(c)
              if name in CLAIMS}
    if partner.oauth is not None and NV_READ in partner.oauth.scopes:
        levels.add("raw number")  # Number Verification's read scope hands over the number
    return next((level for level in PRIVACY_LEVELS if level in levels), "yes/no")


@dataclass(frozen=True)
class Explanation:
    host: str
    port: int
    path: str
    partner: Partner | None
    reason: str  # why nothing matched, or which pattern did

    def lines(self) -> list[str]:
        out = [f"host {self.host} port {self.port} path {self.path}"]
        if self.partner is None:
            out.append(f"no partner: {self.reason}; no identity is sent")
            return out
        p = self.partner
        out.append(f"partner '{p.id}' ({p.purpose}, privacy: {privacy_level(p)}) "
                   f"{self.reason}")
        out += ["  " + describe_claim(c) for c in p.claims]
        if p.oauth is not None:
            out.append(f"  OAuth client '{p.oauth.client_id}' (Number Verification): scopes "
                       + ", ".join(p.oauth.scopes))
        return out

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"host": self.host, "port": self.port, "path": self.path,
                               "partner": None, "reason": self.reason, "headers": []}
        p = self.partner
        if p is not None:
            doc["partner"] = {"id": p.id, "purpose": p.purpose, "privacy": privacy_level(p),
                              "line": p.line}
            doc["headers"] = [{"header": c.header, "claim": c.claim, "include": list(c.include),
                               "format": c.format if _formatted(c) else None}
                              for c in p.claims]
            if p.oauth is not None:
                doc["oauth"] = {"client_id": p.oauth.client_id, "scopes": list(p.oauth.scopes)}
        return doc


def explain(policy: Policy, host: str, *, path: str = "/", port: int = 80,
            now: float) -> Explanation:
    name = normalise_host(host)
    if name is None:
        return Explanation(host, port, path, None, "not a valid host name")
    candidates = policy.matcher.candidates(name)
    # The same path rule as the gateway: ambiguous paths never match path-scoped partners.
    partner = policy.matcher.match(name, port, matchable_path(path.encode()), now)
    if partner is not None:
        where = f"{policy.source}:{partner.line}" if partner.line else policy.source
        return Explanation(name, port, path, partner, f"matches (defined at {where})")
    if not candidates:
        return Explanation(name, port, path, None, "no host pattern matches")
    reasons = []
    for c in candidates:
        if not c.active(now):
            reasons.append(f"'{c.id}' expired on {c.expires}")
        elif c.ports and port not in c.ports:
            reasons.append(f"'{c.id}' is limited to ports {sorted(c.ports)}")
        else:
            reasons.append(f"'{c.id}' is limited to paths {list(c.paths)}")
    return Explanation(name, port, path, None, "; ".join(reasons))


Scope = tuple[str, tuple[int, ...], tuple[str, ...]]  # host pattern, ports, paths
OAUTH = "oauth"  # the "header" of an exposure that is a Number Verification scope
Exposure = tuple[str, str, str]  # partner id, header, claim (with format)


def exposures(policy: Policy, now: float) -> dict[Scope, set[Exposure]]:
    out: dict[Scope, set[Exposure]] = {}
    for p in policy.partners:
        if not p.active(now):
            continue
        for host in p.hosts:
            scope = (host, tuple(sorted(p.ports)), tuple(sorted(p.paths)))
            claims = {(p.id, c.header.lower(), _exposure_name(c)) for c in p.claims}
            out.setdefault(scope, set()).update(claims)
        if p.oauth is not None:  # a Number Verification scope is exposure too (NV_READ: raw)
            key = (f"oauth client {p.oauth.client_id}", (), ())
            out.setdefault(key, set()).update((p.id, OAUTH, s) for s in p.oauth.scopes)
    return out


def _exposure_name(c: ClaimSpec) -> str:
    """A change of what an assertion carries is a change of exposure: name it."""
    fmt = f":{c.format}" if _formatted(c) else ""
    inside = f"[{','.join(sorted(c.include))}]" if c.include else ""
    return c.claim + inside + fmt


ChangeKind = Literal["added", "withdrawn", "narrowed"]


@dataclass(frozen=True)
class Change:
    """One exposure that differs: newly exposed somewhere it was not, withdrawn entirely, or
    narrowed (still given, on fewer ports or paths: less exposure, never new)."""

    kind: ChangeKind
    scope: Scope
    exposure: Exposure
    narrowed_to: tuple[Scope, ...] = ()

    @property
    def added(self) -> bool:
        return self.kind == "added"

    def __str__(self) -> str:
        partner, header, claim = self.exposure
        verb = {"added": "+ newly exposed", "withdrawn": "- withdrawn   ",
                "narrowed": "- narrowed    "}[self.kind]
        carrier = "as an OAuth scope" if header == OAUTH else f"in {header}"
        line = f"{verb} {_where(self.scope)}: {claim} {carrier} to partner '{partner}'"
        if self.narrowed_to:
            line += " (now only " + "; ".join(_where(s) for s in self.narrowed_to) + ")"
        return line

    def to_json(self) -> dict[str, Any]:
        host, ports, paths = self.scope
        partner, header, claim = self.exposure
        out: dict[str, Any] = {"change": self.kind, "host": host, "ports": list(ports),
                               "paths": list(paths), "partner": partner, "claim": claim,
                               "header": None if header == OAUTH else header,
                               "oauth_scope": header == OAUTH}
        if self.kind == "narrowed":
            out["now"] = [{"host": h, "ports": list(po), "paths": list(pa)}
                          for h, po, pa in self.narrowed_to]
        return out


def _where(scope: Scope) -> str:
    host, ports, paths = scope
    return host + (f" ports {list(ports)}" if ports else "") + \
        (f" paths {list(paths)}" if paths else "")


def _covers(wide: Scope, narrow: Scope) -> bool:
    """Every request `narrow` discloses to, `wide` discloses to as well (same host pattern;
    no ports or paths means all of them)."""
    if wide[0] != narrow[0]:
        return False
    wide_ports, narrow_ports = wide[1], narrow[1]
    if wide_ports and (not narrow_ports or not set(narrow_ports) <= set(wide_ports)):
        return False
    wide_paths, narrow_paths = wide[2], narrow[2]
    if not wide_paths:
        return True
    return bool(narrow_paths) and all(
        any(path_within(path, prefix) for prefix in wide_paths) for path in narrow_paths)


def diff(old: Policy, new: Policy, now: float) -> list[Change]:
    """What NEW discloses that OLD did not ("added"), and what it no longer discloses
    ("withdrawn", or "narrowed" when the same claim stays on a part of the old scope).
    An exposure counts as added only where no old scope of the same claim covered it."""
    before, after = _by_exposure(exposures(old, now)), _by_exposure(exposures(new, now))
    changes: list[Change] = []
    for exposure in sorted(set(before) | set(after)):
        was, is_now = before.get(exposure, []), after.get(exposure, [])
        for scope in is_now:
            if not any(_covers(old_scope, scope) for old_scope in was):
                changes.append(Change("added", scope, exposure))
        for scope in was:
            if any(_covers(new_scope, scope) for new_scope in is_now):
                continue
            inside = tuple(s for s in is_now if _covers(scope, s))
            changes.append(Change("narrowed" if inside else "withdrawn", scope, exposure,
                                  inside))
    return sorted(changes, key=lambda c: (c.scope, c.kind != "added", c.exposure))


def _by_exposure(scoped: dict[Scope, set[Exposure]]) -> dict[Exposure, list[Scope]]:
    out: dict[Exposure, list[Scope]] = {}
    for scope in sorted(scoped):
        for exposure in scoped[scope]:
            out.setdefault(exposure, []).append(scope)
    return out
