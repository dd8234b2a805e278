"""The claim registry, and rendering a partner's claims from a subscriber binding.

`CLAIMS` declares each claim once: how it renders, what it reveals (policy explain), its
words for reports and `/me`, whether an assertion may carry it and as which JSON type (what
the partner kit hands out). The policy lint, the reports, `/me` and the partner kit read it;
adding a claim is one entry here and its test.

Every claim is a pure function of (binding, partner, secrets). Pseudonyms are pairwise: the
key is derived per partner from one operator secret, so two partners holding the same
subscriber's pseudonyms cannot link them (OIDC Core §8.1 "pairwise" subject identifiers).

Pseudonym keys are versioned: version 1 is `pseudonym_secret`; a partner moves to a newer
key only when the operator pins it there (every pseudonym it sees then changes, which is the
point when asked). A recycled MSISDN gets fresh pseudonyms from a per-subscriber salt epoch
in the binding's attributes. The `assertion` claim signs the pseudonym (see assertion.py).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .assertion import Signer, assertion_payload
from .bindings import AGE_OVER_18, Binding

if TYPE_CHECKING:  # the policy model's loader reads this registry: no import at run time
    from .policy.model import ClaimSpec, Partner

_PSEUDONYM_LABEL = b"linewarden/pseudonym/v1/"

# Binding attribute (from the subscriber profile): bump it when a number is recycled to a new
# subscriber, and every partner sees a pseudonym unrelated to the previous holder's. Absent or
# "0" leaves pseudonyms exactly as before epochs existed.
PSEUDONYM_EPOCH = "pseudonym_epoch"


@dataclass(frozen=True)
class Secrets:
    """Keys the claims need. Derived keys are cached per partner id (a pure memo)."""

    pseudonym_secret: bytes  # pseudonym key version 1
    ledger_key: bytes
    operator: str = ""  # MCC-MNC, e.g. "234-10"
    pseudonym_keys: Mapping[int, bytes] = field(default_factory=dict)  # versions >= 2
    partner_key_versions: Mapping[str, int] = field(default_factory=dict)  # pins; default 1
    signer: Signer | None = field(default=None, compare=False)  # None: assertions withheld
    _partner_keys: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def key_version(self, partner_id: str) -> int:
        return self.partner_key_versions.get(partner_id, 1)

    def partner_key(self, partner_id: str) -> bytes:
        key = self._partner_keys.get(partner_id)
        if key is None:
            version = self.key_version(partner_id)
            secret = self.pseudonym_secret if version == 1 else self.pseudonym_keys[version]
            key = hmac.digest(secret, _PSEUDONYM_LABEL + partner_id.encode(), "sha256")
            self._partner_keys[partner_id] = key
        return key


def pseudonym(secrets: Secrets, partner_id: str, msisdn: str, epoch: str = "") -> str:
    subject = msisdn.encode()
    if epoch and epoch != "0":
        subject += b"\0epoch:" + epoch.encode()
    digest = hmac.digest(secrets.partner_key(partner_id), subject, "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@functools.lru_cache(maxsize=65536)  # one HMAC per subscriber, not per request
def subscriber_key(ledger_key: bytes, msisdn: str) -> str:
    """HMAC of the E.164 number: ledger rows are queryable by number, never store it."""
    return hmac.new(ledger_key, b"+" + msisdn.encode(), hashlib.sha256).hexdigest()


# How much a partner learns, most revealing first: `review.privacy_level` ranks by it.
PrivacyLevel = Literal["raw number", "pseudonym", "yes/no"]
PRIVACY_LEVELS: tuple[PrivacyLevel, ...] = ("raw number", "pseudonym", "yes/no")
# The header value for one claim, or None when the subscriber has no such fact:
# (spec, partner, binding, secrets, now, nonce). `now` and `nonce` are the assertion's iat
# and jti, from the caller, so rendering stays pure.
Renderer = Callable[["ClaimSpec", "Partner", Binding, "Secrets", float, bytes], "str | None"]


@dataclass(frozen=True, slots=True)
class Claim:
    name: str
    render: Renderer
    privacy: str  # what the header reveals, for `policy explain`
    level: PrivacyLevel
    words: str  # the claim in a subscriber's words: reports and /me
    raw_number: bool = False  # the number itself: only with allow_raw_msisdn
    # May an assertion's `include` carry it, and as what JSON value of the header value;
    # its type is also the type the partner kit's `verify()` hands out.
    in_assertion: Callable[[str], Any] | None = None
    kit_type: type | None = None


def _msisdn(spec: ClaimSpec, partner: Partner, binding: Binding, secrets: Secrets,
            now: float, nonce: bytes) -> str | None:
    return "+" + binding.msisdn if spec.format == "+e164" else binding.msisdn


def _pseudonym(spec: ClaimSpec, partner: Partner, binding: Binding, secrets: Secrets,
               now: float, nonce: bytes) -> str | None:
    return pseudonym(secrets, partner.id, binding.msisdn,
                     binding.attributes.get(PSEUDONYM_EPOCH, ""))


def _operator(spec: ClaimSpec, partner: Partner, binding: Binding, secrets: Secrets,
              now: float, nonce: bytes) -> str | None:
    return secrets.operator or None


def _age_over_18(spec: ClaimSpec, partner: Partner, binding: Binding, secrets: Secrets,
                 now: float, nonce: bytes) -> str | None:
    verified = binding.attributes.get(AGE_OVER_18)
    return verified if verified in ("true", "false") else None


def _assertion(spec: ClaimSpec, partner: Partner, binding: Binding, secrets: Secrets,
               now: float, nonce: bytes) -> str | None:
    signer = secrets.signer
    if signer is None:
        return None
    payload = assertion_payload(
        issuer=signer.issuer, audience=partner.id, now=now, ttl=signer.ttl, nonce=nonce,
        subject=pseudonym(secrets, partner.id, binding.msisdn,
                          binding.attributes.get(PSEUDONYM_EPOCH, "")),
        extra=assertion_contents(spec, partner, binding, secrets))
    return None if payload is None else signer.sign(payload)


CLAIMS: Mapping[str, Claim] = {c.name: c for c in (
    Claim("msisdn", _msisdn, "raw phone number", "raw number", "the phone number itself",
          raw_number=True, in_assertion=str, kit_type=str),
    Claim("pseudonym", _pseudonym, "pairwise pseudonym", "pseudonym",
          "a per-partner pseudonym"),
    Claim("age_over_18", _age_over_18, "yes/no answer", "yes/no",
          "whether the subscriber is over 18", in_assertion=lambda v: v == "true",
          kit_type=bool),
    Claim("operator", _operator, "network code (not personal)", "yes/no",
          "the mobile operator's code", in_assertion=str, kit_type=str),
    # Carries its `sub` (the pairwise pseudonym) and the claims its `include` lists.
    Claim("assertion", _assertion, "signed pairwise pseudonym", "pseudonym",
          "a signed identity assertion"),
)}
# What an `assertion` may carry besides its `sub`: `include = [...]`.
ASSERTION_INCLUDES: tuple[str, ...] = tuple(
    name for name, claim in CLAIMS.items() if claim.in_assertion is not None)
# Reports and /me: each claim in a subscriber's words.
CLAIM_WORDS: Mapping[str, str] = {name: claim.words for name, claim in CLAIMS.items()}


def render(spec: ClaimSpec, partner: Partner, binding: Binding, secrets: Secrets, *,
           now: float = 0.0, nonce: bytes = b"") -> str | None:
    """The header value for one claim, or None when the subscriber has no such fact."""
    claim = CLAIMS.get(spec.claim)
    if claim is None:
        return None  # unknown claims never pass lint; refuse rather than guess
    if claim.raw_number and not partner.allow_raw_msisdn:
        return None  # lint refuses this; never trust one layer alone
    return claim.render(spec, partner, binding, secrets, now, nonce)


def assertion_contents(spec: ClaimSpec, partner: Partner, binding: Binding,
                       secrets: Secrets) -> dict[str, Any]:
    """The claims an assertion carries besides the registered ones: only those listed in
    `include`, and only the facts the subscriber has (JSON types, not header strings)."""
    out: dict[str, Any] = {}
    for name in spec.include:
        claim = CLAIMS.get(name)
        if claim is None or claim.in_assertion is None:
            continue
        if claim.raw_number and not partner.allow_raw_msisdn:
            continue
        value = claim.render(spec, partner, binding, secrets, 0.0, b"")
        if value is not None:
            out[name] = claim.in_assertion(value)
    return out
