"""What a policy exposes: `explain` one host, `diff` two versions.

Both answer the operator's question before a change goes live: which partner would get
which identity, and what a new file newly exposes (the O2 failure was a change nobody
reviewed for exposure).
"""

from __future__ import annotations

from dataclasses import dataclass

from .policy import NV_READ, ClaimSpec, Partner, Policy, matchable_path, normalise_host

PRIVACY = {"msisdn": "raw phone number", "pseudonym": "pairwise pseudonym",
           "age_over_18": "yes/no answer", "operator": "network code (not personal)",
           "assertion": "signed pairwise pseudonym"}


def _carried(spec: ClaimSpec) -> tuple[str, ...]:
    """What one header discloses: an assertion carries its `sub` pseudonym and `include`."""
    return ("pseudonym", *spec.include) if spec.claim == "assertion" else (spec.claim,)


def describe_claim(spec: ClaimSpec) -> str:
    fmt = f", format {spec.format}" if "msisdn" in _carried(spec) else ""
    inside = f" carrying {', '.join(spec.include)}" if spec.include else ""
    privacy = PRIVACY.get(spec.claim, spec.claim)
    if "msisdn" in spec.include:
        privacy += " + raw phone number"
    return f"{spec.header}: {spec.claim}{inside}{fmt} [{privacy}]"


def privacy_level(partner: Partner) -> str:
    """The most revealing claim a partner gets: raw number > pseudonym > yes/no."""
    claims = {name for c in partner.claims for name in _carried(c)}
    if "msisdn" in claims or (partner.oauth is not None and NV_READ in partner.oauth.scopes):
        return "raw number"
    if "pseudonym" in claims:
        return "pseudonym"
    return "yes/no"


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
    fmt = f":{c.format}" if "msisdn" in _carried(c) else ""
    inside = f"[{','.join(sorted(c.include))}]" if c.include else ""
    return c.claim + inside + fmt


@dataclass(frozen=True)
class Change:
    added: bool  # True: newly exposed; False: withdrawn
    scope: Scope
    exposure: Exposure

    def __str__(self) -> str:
        host, ports, paths = self.scope
        where = host + (f" ports {list(ports)}" if ports else "") + \
            (f" paths {list(paths)}" if paths else "")
        partner, header, claim = self.exposure
        verb = "+ newly exposed" if self.added else "- withdrawn   "
        carrier = "as an OAuth scope" if header == OAUTH else f"in {header}"
        return f"{verb} {where}: {claim} {carrier} to partner '{partner}'"


def diff(old: Policy, new: Policy, now: float) -> list[Change]:
    before, after = exposures(old, now), exposures(new, now)
    changes: list[Change] = []
    for scope in sorted(set(before) | set(after)):
        was, now_set = before.get(scope, set()), after.get(scope, set())
        changes += [Change(True, scope, e) for e in sorted(now_set - was)]
        changes += [Change(False, scope, e) for e in sorted(was - now_set)]
    return changes
