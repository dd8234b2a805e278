"""Rendering a partner's claims from a subscriber binding.

Every claim is a pure function of (binding, partner, secrets). Pseudonyms are pairwise: the
key is derived per partner from one operator secret, so two partners holding the same
subscriber's pseudonyms cannot link them (OIDC Core §8.1 "pairwise" subject identifiers).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from .bindings import Binding
from .policy import ClaimSpec, Partner

_PSEUDONYM_LABEL = b"linewarden/pseudonym/v1/"
_SUBSCRIBER_KEY_LABEL = b"linewarden/subscriber-key/v1"


@dataclass(frozen=True)
class Secrets:
    """Keys the claims need. Derived keys are cached per partner id (a pure memo)."""

    pseudonym_secret: bytes
    ledger_key: bytes
    operator: str = ""  # MCC-MNC, e.g. "234-10"
    _partner_keys: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def partner_key(self, partner_id: str) -> bytes:
        key = self._partner_keys.get(partner_id)
        if key is None:
            key = hmac.digest(self.pseudonym_secret, _PSEUDONYM_LABEL + partner_id.encode(),
                              "sha256")
            self._partner_keys[partner_id] = key
        return key


def pseudonym(secrets: Secrets, partner_id: str, msisdn: str) -> str:
    digest = hmac.digest(secrets.partner_key(partner_id), msisdn.encode(), "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def subscriber_key(ledger_key: bytes, msisdn: str) -> str:
    """HMAC of the E.164 number: ledger rows are queryable by number, never store it."""
    return hmac.new(ledger_key, b"+" + msisdn.encode(), hashlib.sha256).hexdigest()


def render(spec: ClaimSpec, partner: Partner, binding: Binding, secrets: Secrets) -> str | None:
    """The header value for one claim, or None when the subscriber has no such fact."""
    claim = spec.claim
    if claim == "msisdn":
        if not partner.allow_raw_msisdn:  # lint refuses this; never trust one layer alone
            return None
        return "+" + binding.msisdn if spec.format == "+e164" else binding.msisdn
    if claim == "pseudonym":
        return pseudonym(secrets, partner.id, binding.msisdn)
    if claim == "operator":
        return secrets.operator or None
    if claim == "age_over_18":
        verified = binding.attributes.get("age_over_18")
        return verified if verified in ("true", "false") else None
    return None  # unknown claims never pass lint; refuse rather than guess
