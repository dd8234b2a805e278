"""Rendering a partner's claims from a subscriber binding.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .assertion import Signer, assertion_payload
from .bindings import Binding
from .policy import ClaimSpec, Partner

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


def render(spec: ClaimSpec, partner: Partner, binding: Binding, secrets: Secrets, *,
           now: float = 0.0, nonce: bytes = b"") -> str | None:
    """The header value for one claim, or None when the subscriber has no such fact.

    `now` and `nonce` (the assertion's iat and jti) come from the caller: this stays pure."""
    claim = spec.claim
    if claim == "assertion":
        return _assertion(spec, partner, binding, secrets, now, nonce)
    if claim == "msisdn":
        if not partner.allow_raw_msisdn:  # lint refuses this; never trust one layer alone
            return None
        return "+" + binding.msisdn if spec.format == "+e164" else binding.msisdn
    if claim == "pseudonym":
        return pseudonym(secrets, partner.id, binding.msisdn,
                         binding.attributes.get(PSEUDONYM_EPOCH, ""))
    if claim == "operator":
        return secrets.operator or None
    if claim == "age_over_18":
        verified = binding.attributes.get("age_over_18")
        return verified if verified in ("true", "false") else None
    return None  # unknown claims never pass lint; refuse rather than guess


def assertion_contents(spec: ClaimSpec, partner: Partner, binding: Binding,
                       secrets: Secrets) -> dict[str, Any]:
    """The claims an assertion carries besides the registered ones: only those listed in
    `include`, and only the facts the subscriber has (JSON types, not header strings)."""
    out: dict[str, Any] = {}
    for name in spec.include:
        if name == "msisdn" and partner.allow_raw_msisdn:
            out["msisdn"] = "+" + binding.msisdn if spec.format == "+e164" else binding.msisdn
        elif name == "operator" and secrets.operator:
            out["operator"] = secrets.operator
        elif name == "age_over_18":
            verified = binding.attributes.get("age_over_18")
            if verified in ("true", "false"):
                out["age_over_18"] = verified == "true"
    return out


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
