"""Assertions in process: policy lint, pseudonym versions, the core, the kit's every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from assertion_support import forge, unverified
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from linewarden import wiring
from linewarden.assertion import (
    MAX_TTL,
    RETIRED_KEY_RETENTION,
    TOKEN_TYPE,
    Algorithm,
    KeyRing,
    Signer,
    SigningKey,
    assertion_payload,
    new_private_key,
    public_jwk,
)
from linewarden.bindings import Binding
from linewarden.claims import Secrets, pseudonym, render
from linewarden.cli_support import CliState
from linewarden.config import load_config
from linewarden.decide import RequestHead, Rules, Settings, decide
from linewarden.keys import KeyDirectory
from linewarden.keys_cli import keys
from linewarden.partner import (
    BadSignature,
    Claims,
    Expired,
    JWKSFetcher,
    KeySet,
    KeysUnavailable,
    MalformedAssertion,
    MissingAssertion,
    NotYetValid,
    ReplayCache,
    ReplayCacheFull,
    Replayed,
    UnexpectedAlgorithm,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    verify,
)
from linewarden.policy import ClaimSpec, Partner, PolicyError
from linewarden.policy.load import parse_policy
from linewarden.review import diff, explain, privacy_level
from linewarden.sourcemap import ConfigError, ConfigErrors

NOW = 1_800_000_000.0
NONCE = bytes(range(16))
MSISDN = "447400900123"


def signer(algorithm: Algorithm = "ES256", ttl: int = 60, created: float = NOW) -> Signer:
    private = new_private_key(algorithm)
    jwk = public_jwk(private, algorithm)
    return Signer("urn:test", KeyRing((SigningKey(jwk["kid"], algorithm, jwk, created,
                                                  private=private),)), ttl)


def jwks(s: Signer) -> dict[str, Any]:
    return s.ring.jwks(NOW)


def partner(pid: str = "age-partner", include: tuple[str, ...] = (),
            allow_raw: bool = False) -> Partner:
    return Partner(id=pid, purpose="age_verification", hosts=("age.test",), paths=(),
                   ports=frozenset(), expires=None, allow_raw_msisdn=allow_raw,
                   claims=(ClaimSpec("X-Operator-Assertion", "assertion", include=include),))


def token(s: Signer, pid: str = "age-partner", *, now: float = NOW, nonce: bytes = NONCE,
          binding: Binding | None = None, include: tuple[str, ...] = ()) -> str:
    p = partner(pid, include)
    value = render(p.claims[0], p, binding or Binding("127.0.0.1", MSISDN),
                   Secrets(b"secret", b"ledger", "234-10", signer=s), now=now, nonce=nonce)
    assert value is not None
    return value


# ---------------------------------------------------------------- policy

POLICY = """
[[partners]]
id = "p"
purpose = "age_verification"
hosts = ["p.test"]
{extra}
[partners.headers]
{headers}
"""


def findings(headers: str, extra: str = "") -> list[str]:
    try:
        _, found = parse_policy(POLICY.format(headers=headers, extra=extra))
    except PolicyError as exc:
        return [f"{f.level}: {f.message}" for f in exc.findings]
    return [f"{f.level}: {f.message}" for f in found]


@pytest.mark.parametrize(("headers", "extra", "expected"), [
    ('X-A = "assertion"', "", []),
    ('X-A = { claim = "assertion", include = ["age_over_18", "operator"] }', "", []),
    ('X-A = { claim = "assertion", include = ["age"] }', "",
     ["error: unknown claim 'age' in the assertion's include"]),
    ('X-A = { claim = "assertion", include = ["pseudonym"] }', "",
     ["error: 'pseudonym' in include: the assertion's 'sub' already is the pairwise pseudonym"]),
    ('X-A = { claim = "assertion", include = ["msisdn"] }', "",
     ["error: the assertion would carry the raw phone number without opt-in"]),
    ('X-A = { claim = "assertion", include = ["msisdn"] }', "allow_raw_msisdn = true",
     ["warning: the assertion carries the raw phone number"]),
    ('X-A = "msisdn"', "allow_raw_msisdn = true",
     ["warning: header 'X-A' sends the raw phone number"]),
    ('X-A = { claim = "operator", include = ["age_over_18"] }', "",
     ["error: 'include' applies only to the 'assertion' claim, not 'operator'"]),
    ('X-A = "assertion"\nX-B = "assertion"', "", ["error: more than one 'assertion' header"]),
])
def test_policy_lint(headers: str, extra: str, expected: list[str]) -> None:
    assert findings(headers, extra) == expected


def test_explain_and_diff_show_what_an_assertion_carries() -> None:
    plain, _ = parse_policy(POLICY.format(headers='X-A = "assertion"', extra=""))
    raw, _ = parse_policy(POLICY.format(
        headers='X-A = { claim = "assertion", include = ["msisdn"] }',
        extra="allow_raw_msisdn = true"))
    assert privacy_level(plain.partners[0]) == "pseudonym"
    assert privacy_level(raw.partners[0]) == "raw number"
    lines = explain(raw, "p.test", now=NOW).lines()
    assert "X-A: assertion carrying msisdn, format e164" in lines[-1]
    changes = [str(c) for c in diff(plain, raw, NOW)]
    assert any("+ newly exposed" in c and "assertion[msisdn]:e164" in c for c in changes)


# ---------------------------------------------------------------- pseudonyms

def v1_pseudonym(secret: bytes, partner_id: str, msisdn: str) -> str:
    key = hmac.digest(secret, b"linewarden/pseudonym/v1/" + partner_id.encode(), "sha256")
    return base64.urlsafe_b64encode(hmac.digest(key, msisdn.encode(), "sha256")) \
        .rstrip(b"=").decode()


def test_pseudonym_key_versions_change_only_the_pinned_partner() -> None:
    before = Secrets(b"v1-secret", b"l")
    after = Secrets(b"v1-secret", b"l", pseudonym_keys={2: b"v2-secret"},
                    partner_key_versions={"a": 2})
    assert pseudonym(before, "a", MSISDN) == v1_pseudonym(b"v1-secret", "a", MSISDN)
    assert pseudonym(after, "b", MSISDN) == pseudonym(before, "b", MSISDN)  # unpinned: same
    assert pseudonym(after, "a", MSISDN) == v1_pseudonym(b"v2-secret", "a", MSISDN)
    assert pseudonym(after, "a", MSISDN) != pseudonym(before, "a", MSISDN)


def test_salt_epoch_gives_a_recycled_number_fresh_pseudonyms() -> None:
    s = Secrets(b"v1-secret", b"l")
    assert pseudonym(s, "a", MSISDN, "0") == pseudonym(s, "a", MSISDN)
    fresh = pseudonym(s, "a", MSISDN, "1")
    assert fresh != pseudonym(s, "a", MSISDN)
    assert fresh != pseudonym(s, "b", MSISDN, "1")  # still pairwise


def test_assertion_sub_follows_the_epoch() -> None:
    s = signer()
    old = unverified(token(s))[1]["sub"]
    new = unverified(token(s, binding=Binding("127.0.0.1", MSISDN,
                                              {"pseudonym_epoch": "2"})))[1]["sub"]
    assert old != new


# ---------------------------------------------------------------- the core

def _decide(s: Signer | None, nonce: bytes, attributes: dict[str, str] | None = None) -> Any:
    policy, _ = parse_policy(POLICY.format(
        headers='X-Operator-Assertion = { claim = "assertion", include = ["age_over_18"] }',
        extra=""))
    rules = Rules(policy, Settings(Secrets(b"secret", b"ledger", "234-10", signer=s)))
    head = RequestHead(b"GET", b"http://p.test/", "1.1", [(b"Host", b"p.test")])
    return decide(head, Binding("127.0.0.1", MSISDN, attributes or {"age_over_18": "true"}),
                  rules, switch_tripped=False, now=NOW, nonce=nonce)


def test_decide_signs_deterministically_from_its_arguments() -> None:
    s = signer()
    first, again = _decide(s, NONCE), _decide(s, NONCE)
    assert first.identity == again.identity  # RFC 6979: no hidden randomness in the core
    assert first.identity != _decide(s, bytes(16)).identity
    name, value = first.identity[0]
    assert name == b"X-Operator-Assertion"
    claims = verify(value.decode(), "p", jwks(s), replay=None, now=NOW)
    assert claims.age_over_18 is True and claims.jti == "AAECAwQFBgcICQoLDA0ODw"
    assert first.record.claims == ("assertion", "age_over_18")  # the ledger knows


@pytest.mark.parametrize("nonce", [b"", b"short"])
def test_no_nonce_or_no_signer_means_no_assertion(nonce: bytes) -> None:
    assert _decide(signer(), nonce).withheld == "no_claims"
    assert _decide(None, NONCE).withheld == "no_claims"


def test_assertion_omits_facts_the_subscriber_lacks() -> None:
    value = _decide(signer(), NONCE, {"other": "x"}).identity[0][1].decode()
    assert "age_over_18" not in unverified(value)[1]


# ---------------------------------------------------------------- verify: every refusal

@given(a=st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True),
       b=st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True),
       msisdn=st.from_regex(r"44740090[0-9]{4}", fullmatch=True),
       nonce=st.binary(min_size=16, max_size=32),
       offset=st.integers(min_value=0, max_value=MAX_TTL - 1))
@settings(max_examples=150, deadline=None)
def test_no_assertion_for_one_partner_verifies_for_another(
        a: str, b: str, msisdn: str, nonce: bytes, offset: int) -> None:
    value = token(HYPOTHESIS_SIGNER, a, nonce=nonce, binding=Binding("127.0.0.1", msisdn))
    keys = KeySet.from_jwks(jwks(HYPOTHESIS_SIGNER))
    now = NOW + offset % 60
    if a == b:
        assert verify(value, b, keys, replay=None, now=now).aud == a
        return
    with pytest.raises(WrongAudience):
        verify(value, b, keys, replay=None, now=now)


HYPOTHESIS_SIGNER = signer()


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_both_algorithms_verify(algorithm: Algorithm) -> None:
    s = signer(algorithm)
    value = token(s, include=("operator",))
    assert unverified(value)[0]["alg"] == algorithm
    claims = verify(value, "age-partner", jwks(s), replay=None, now=NOW, issuer="urn:test")
    assert isinstance(claims, Claims) and claims.operator == "234-10"


def test_each_failure_has_its_own_error() -> None:
    s, other = signer(), signer()
    good = token(s)
    keys = jwks(s)
    header, payload = unverified(good)
    cases: list[tuple[type[Exception], Any, dict[str, Any]]] = [
        (MissingAssertion, None, {}),
        (MissingAssertion, "", {}),
        (MalformedAssertion, "not-a-jws", {}),
        (UnexpectedAlgorithm, forge({**header, "alg": "none"}, payload), {}),
        (UnexpectedAlgorithm, forge({**header, "alg": "RS256"}, payload, b"x"), {}),
        (UnexpectedAlgorithm, forge({**header, "alg": "EdDSA"}, payload, b"x" * 64), {}),
        (MalformedAssertion, forge({**header, "typ": "JWT"}, payload, b"x"), {}),
        (UnknownKey, token(other), {}),
        (UnknownKey, forge({"alg": "ES256", "typ": TOKEN_TYPE}, payload, b"x"), {}),
        (BadSignature, good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"), {}),
        (WrongAudience, good, {"audience": "shop-partner"}),
        (WrongIssuer, good, {"issuer": "urn:someone-else"}),
        (Expired, good, {"now": NOW + 60 + 30}),
        (NotYetValid, good, {"now": NOW - 31}),
    ]
    for error, value, options in cases:
        kwargs: dict[str, Any] = {"replay": None, "now": NOW, **options}
        audience = kwargs.pop("audience", "age-partner")
        with pytest.raises(error):
            verify(value, audience, keys, **kwargs)
    # within the leeway both ways it still verifies
    verify(good, "age-partner", keys, replay=None, now=NOW + 60 + 29)
    verify(good, "age-partner", keys, replay=None, now=NOW - 29)


def test_lifetime_longer_than_300_s_is_refused() -> None:
    s = signer()
    payload = assertion_payload(issuer="i", audience="a", subject="s", now=NOW, ttl=60,
                                nonce=NONCE, extra={})
    assert payload is not None
    long = s.sign({**payload, "exp": payload["iat"] + MAX_TTL + 1})
    assert long is not None
    with pytest.raises(MalformedAssertion, match="lifetime"):
        verify(long, "a", jwks(s), replay=None, now=NOW)


def test_replay_cache_forgets_after_expiry_and_fails_closed_when_full() -> None:
    s = signer()
    cache = ReplayCache(max_entries=2)
    value = token(s)
    verify(value, "age-partner", jwks(s), replay=cache, now=NOW)
    with pytest.raises(Replayed):
        verify(value, "age-partner", jwks(s), replay=cache, now=NOW + 1)
    assert cache.first_use("b", NOW + 10, NOW)
    with pytest.raises(ReplayCacheFull):
        cache.first_use("c", NOW + 10, NOW)
    assert cache.first_use("c", NOW + 100, NOW + 91)  # both earlier ones expired
    assert len(cache) == 1


# ---------------------------------------------------------------- JWKS fetcher

class FakeOperator:
    def __init__(self, s: Signer, cache_control: str = "public, max-age=300") -> None:
        self.signer, self.cache_control, self.calls, self.down = s, cache_control, 0, False

    def __call__(self, url: str, timeout: float) -> tuple[bytes, str]:
        self.calls += 1
        if self.down:
            raise OSError("connection refused")
        return json.dumps(self.signer.ring.jwks(NOW)).encode(), self.cache_control


def test_fetcher_caches_refetches_new_kids_and_limits_made_up_ones() -> None:
    clock = [0.0]
    s = signer()
    operator = FakeOperator(s)
    fetcher = JWKSFetcher("http://gw/.well-known/jwks.json", clock=lambda: clock[0],
                          get=operator)
    kid = s.ring.keys[0].kid
    for _ in range(3):
        assert fetcher.key(kid) is not None
    assert operator.calls == 1
    # a rotation: the new kid is fetched at once, though the cache is fresh
    rotated = signer(created=NOW + 1)
    s.use(KeyRing((*rotated.ring.keys, s.ring.keys[0])))
    clock[0] = 5.0
    assert fetcher.would_fetch(rotated.ring.keys[0].kid)
    assert fetcher.key(rotated.ring.keys[0].kid) is not None
    assert operator.calls == 2
    # made-up kids: one more fetch, then none for REFETCH_INTERVAL
    assert fetcher.key("made-up-1") is None
    assert fetcher.key("made-up-2") is None
    assert operator.calls == 3
    clock[0] = 16.0
    assert fetcher.key("made-up-3") is None and operator.calls == 4
    # expiry of the cache (max-age 300) refetches
    clock[0] = 400.0
    assert fetcher.key(kid) is not None and operator.calls == 5


def test_fetcher_keeps_stale_keys_when_the_operator_is_down() -> None:
    clock = [0.0]
    s = signer()
    operator = FakeOperator(s, cache_control="max-age=1")  # clamped up to 30 s
    fetcher = JWKSFetcher("http://gw/jwks", clock=lambda: clock[0], get=operator)
    kid = s.ring.keys[0].kid
    assert fetcher.key(kid) is not None
    operator.down = True
    clock[0] = 31.0
    assert fetcher.key(kid) is not None  # stale-if-error
    empty = JWKSFetcher("http://gw/jwks", get=operator)
    with pytest.raises(KeysUnavailable):
        empty.key(kid)
    with pytest.raises(KeysUnavailable):
        verify(token(s), "age-partner", empty, replay=None, now=NOW)


# ---------------------------------------------------------------- keys and config

def test_key_ring_publishes_a_retired_key_until_its_assertions_expired(
        tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    first = directory.generate("ES256", now=NOW)
    new, old = directory.rotate("EdDSA", now=NOW + 100)
    assert old is not None and old.kid == first.kid
    ring = directory.load()
    assert ring.active is not None and ring.active.kid == new.kid
    assert [k.kid for k in ring.published(NOW + 100)] == [new.kid, first.kid]
    assert [k.kid for k in ring.published(NOW + 100 + RETIRED_KEY_RETENTION)] == [new.kid]
    assert RETIRED_KEY_RETENTION >= MAX_TTL + 30  # longest lifetime + the kit's leeway
    assert sorted(p.name for p in directory.path.glob("*.pem")) == [f"{new.kid}.pem"]
    assert (directory.path / f"{new.kid}.pem").stat().st_mode & 0o777 == 0o600


def test_keys_cli_generate_rotate_list(tmp_path: Path) -> None:
    config = tmp_path / "linewarden.toml"
    config.write_text('state_dir = "state"\n[signing]\nalgorithm = "EdDSA"\n')
    runner = CliRunner()

    def run(*args: str) -> Any:  # a fresh state per command, as `linewarden` makes one
        return runner.invoke(keys, [*args, "--config", str(config)], obj=CliState(None))

    result = run("generate")
    assert result.exit_code == 0 and "generated EdDSA key" in result.output
    again = run("generate")
    assert again.exit_code == 1 and "use 'linewarden keys rotate'" in again.output
    rotated = run("rotate", "--algorithm", "ES256")
    assert rotated.exit_code == 0 and "retired:" in rotated.output
    listed = run("list", "--json")
    rows = json.loads(listed.output)
    assert [(r["alg"], r["state"]) for r in rows] == [("ES256", "active"), ("EdDSA", "retired")]


@pytest.mark.parametrize(("text", "message"), [
    ("[signing]\nttl = 301\n", "ttl"),
    ('[signing]\nalgorithm = "HS256"\n', "algorithm"),
    ('[identity]\npseudonym_keys = { "1" = "x" }\n', "versions start at 2"),
])
def test_signing_config_is_validated(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "linewarden.toml"
    path.write_text(text)
    with pytest.raises(ConfigErrors, match=message):
        load_config(str(path))


def test_pinning_an_unknown_pseudonym_key_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "linewarden.toml"
    path.write_text(f'state_dir = "{tmp_path}/s"\n[identity]\npseudonym_secret = "a"\n'
                    'partner_key_versions = { "p" = 3 }\n')
    with pytest.raises(ConfigError, match="unknown pseudonym key version 3"):
        wiring.settings(load_config(str(path)))


def test_key_id_is_the_rfc7638_thumbprint() -> None:
    private = new_private_key("ES256")
    jwk = public_jwk(private, "ES256")
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")},
                           separators=(",", ":"), sort_keys=True).encode()
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=")
    assert jwk["kid"] == expected.decode()
