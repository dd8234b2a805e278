"""The claim registry (claims.CLAIMS): each claim declared once, every reader follows it.

Each test walks the registry, so a claim added there is checked here without a new test
of its own for these properties; its renderer still needs one (what value, from which fact).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from linewarden.assertion import KeyRing, Signer, SigningKey, new_private_key, public_jwk
from linewarden.bindings import AGE_OVER_18, Binding
from linewarden.claims import (
    ASSERTION_INCLUDES,
    CLAIM_WORDS,
    CLAIMS,
    PRIVACY_LEVELS,
    Secrets,
    assertion_contents,
    render,
)
from linewarden.numberverify.privacy import WORDS
from linewarden.partner import verify
from linewarden.policy import ClaimSpec, Partner, PolicyError
from linewarden.policy.load import parse_policy
from linewarden.review import describe_claim, privacy_level

NOW = 1_800_000_000.0
BINDING = Binding("127.0.0.1", "447400900123", {AGE_OVER_18: "true"})


def _signer() -> Signer:
    private = new_private_key("ES256")
    jwk = public_jwk(private, "ES256")
    return Signer("urn:test", KeyRing((SigningKey(jwk["kid"], "ES256", jwk, NOW,
                                                  private=private),)), 60)


SECRETS = Secrets(b"secret", b"ledger", "234-10", signer=_signer())


def _partner(claim: str, include: tuple[str, ...] = ()) -> Partner:
    return Partner(id="p", purpose="billing", hosts=("p.test",), paths=(), ports=frozenset(),
                   expires=None, allow_raw_msisdn=True,
                   claims=(ClaimSpec("X-Claim", claim, include=include),))


def _policy(claim: str, allow_raw: bool) -> str:
    return (f'[[partners]]\nid = "p"\npurpose = "billing"\nhosts = ["p.test"]\n'
            f"allow_raw_msisdn = {'true' if allow_raw else 'false'}\n"
            f'[partners.headers]\nX-Claim = "{claim}"\n')


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_every_claim_is_described_everywhere_from_its_entry(name: str) -> None:
    claim = CLAIMS[name]
    assert claim.name == name and claim.level in PRIVACY_LEVELS
    assert claim.words and CLAIM_WORDS[name] == claim.words == WORDS[name]  # reports, /me
    assert f"[{claim.privacy}]" in describe_claim(ClaimSpec("X-Claim", name))
    assert privacy_level(_partner(name)) == claim.level
    assert (name in ASSERTION_INCLUDES) == (claim.in_assertion is not None)
    assert (claim.kit_type is None) == (claim.in_assertion is None)


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_the_lint_accepts_every_claim_and_asks_opt_in_for_the_number(name: str) -> None:
    policy, _ = parse_policy(_policy(name, allow_raw=True))
    assert policy.partners[0].claims[0].claim == name
    if CLAIMS[name].raw_number:
        with pytest.raises(PolicyError, match="raw phone number without opt-in"):
            parse_policy(_policy(name, allow_raw=False))
    else:
        parse_policy(_policy(name, allow_raw=False))


def test_the_lint_refuses_a_claim_not_in_the_registry() -> None:
    with pytest.raises(PolicyError, match="unknown claim 'shoe_size'") as caught:
        parse_policy(_policy("shoe_size", allow_raw=True))
    assert f"use one of {', '.join(CLAIMS)}" in str(caught.value)


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_every_claim_renders_and_a_raw_number_needs_the_opt_in(name: str) -> None:
    partner = _partner(name)
    value = render(partner.claims[0], partner, BINDING, SECRETS, now=NOW, nonce=b"n" * 16)
    assert value  # the binding above has every fact
    closed = dataclasses.replace(partner, allow_raw_msisdn=False)
    refused = render(closed.claims[0], closed, BINDING, SECRETS, now=NOW, nonce=b"n" * 16)
    assert (refused is None) == CLAIMS[name].raw_number


def test_an_assertion_carries_every_eligible_claim_and_the_kit_hands_it_out() -> None:
    partner = _partner("assertion", ASSERTION_INCLUDES)
    contents = assertion_contents(partner.claims[0], partner, BINDING, SECRETS)
    assert set(contents) == set(ASSERTION_INCLUDES)
    for name, value in contents.items():
        assert isinstance(value, CLAIMS[name].kit_type), name  # type: ignore[arg-type]
        assert json.loads(json.dumps(value)) == value
    header = render(partner.claims[0], partner, BINDING, SECRETS, now=NOW, nonce=b"n" * 16)
    claims = verify(header, "p", SECRETS.signer.ring.jwks(NOW),  # type: ignore[union-attr]
                    replay=None, now=NOW)
    assert claims.facts == contents
    assert (claims.age_over_18, claims.operator, claims.msisdn) == (
        True, "234-10", "447400900123")

