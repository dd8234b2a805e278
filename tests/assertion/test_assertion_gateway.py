"""End to end: curl → linewarden serve → partner app behind linewarden.partner.

Real sockets, real keys, the real example app. The partner accepts exactly the assertions
the gateway signed for it, once, while fresh; everything forged is refused by the kit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
from assertion_support import (
    HEADER,
    STACK_TTL,
    Stack,
    WsgiPartner,
    curl,
    forge,
    get,
    start_gateway,
    unverified,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from linewarden.assertion import TOKEN_TYPE
from linewarden.keys import KeyDirectory
from linewarden.partner import Expired, KeySet, verify
from lwtest import free_port


def shop_token(stack: Stack, interface: str = "127.0.0.1") -> str:
    """A real assertion for shop-partner, captured by its (test-only) echo of the header."""
    status, body = curl(stack.gateway.proxy, "http://shop.test/raw", "--interface", interface)
    assert status == 200, body
    return str(body["raw"])


def test_partner_app_accepts_the_gateways_assertion(stack: Stack) -> None:
    status, body = curl(stack.gateway.proxy, "http://age.test/welcome")
    assert status == 200, body
    assert body["verified"] is True
    assert body["adult"] is True  # the binding's profile says age verified
    assert body["operator"] == "234-10"
    assert body["subscriber"] and "447400900123" not in json.dumps(body)


def test_assertion_carries_only_what_the_policy_lists(stack: Stack) -> None:
    header, payload = unverified(shop_token(stack))
    assert header == {"alg": "ES256", "kid": header["kid"], "typ": TOKEN_TYPE}
    assert set(payload) == {"iss", "aud", "sub", "iat", "exp", "jti"}  # no include: sub only
    assert payload["aud"] == "shop-partner"
    assert payload["exp"] - payload["iat"] == STACK_TTL
    assert payload["iss"] == "urn:linewarden:operator:234-10"


def test_direct_request_without_the_gateway_is_refused(stack: Stack) -> None:
    assert get(f"http://127.0.0.1:{stack.age.port}/")[0] == 401
    status, body = get(f"http://127.0.0.1:{stack.shop.port}/")
    assert (status, body["error"]) == (401, "missing")


def test_same_sub_across_requests_different_across_partners(stack: Stack) -> None:
    ages = {curl(stack.gateway.proxy, f"http://age.test/{i}")[1]["subscriber"]
            for i in range(3)}
    shops = {curl(stack.gateway.proxy, f"http://shop.test/{i}")[1]["sub"] for i in range(3)}
    assert len(ages) == 1 and len(shops) == 1
    assert ages != shops  # pairwise: the two partners cannot join on sub
    other = curl(stack.gateway.proxy, "http://shop.test/", "--interface", "127.0.0.2")[1]
    assert other["sub"] not in shops  # another subscriber, another pseudonym


def test_every_assertion_has_a_fresh_jti(stack: Stack) -> None:
    jtis = {unverified(shop_token(stack))[1]["jti"] for _ in range(5)}
    assert len(jtis) == 5


def test_replayed_assertion_is_refused(stack: Stack) -> None:
    token = shop_token(stack)  # used once already, by the request that captured it
    status, body = get(f"http://127.0.0.1:{stack.shop.port}/", {HEADER: token})
    assert (status, body["error"]) == (401, "replayed")


def test_assertion_for_another_partner_is_refused(stack: Stack) -> None:
    token = shop_token(stack)
    status, body = get(f"http://127.0.0.1:{stack.age.port}/", {HEADER: token})
    assert (status, body["error"]) == (401, "wrong_audience")


def test_expired_assertion_is_refused(stack: Stack) -> None:
    # The WSGI partner allows no clock skew: wait out the lifetime, then present a copy
    # already used (expiry is checked before replay, so the answer is "expired").
    token = shop_token(stack)
    time.sleep(max(0.0, unverified(token)[1]["exp"] - time.time()) + 1.1)
    status, body = get(f"http://127.0.0.1:{stack.shop.port}/", {HEADER: token})
    assert (status, body["error"]) == (401, "expired")


def test_self_signed_assertion_is_refused(stack: Stack) -> None:
    real_header, real = unverified(shop_token(stack))
    mine = ec.generate_private_key(ec.SECP256R1())
    claims = {**real, "jti": "forged-1", "iat": int(time.time()),
              "exp": int(time.time()) + 60}
    same_kid = jwt.encode(claims, mine, algorithm="ES256",
                          headers={"kid": real_header["kid"], "typ": TOKEN_TYPE})
    own_kid = jwt.encode({**claims, "jti": "forged-2"}, mine, algorithm="ES256",
                         headers={"kid": "attacker", "typ": TOKEN_TYPE})
    for port in (stack.shop.port, stack.age.port):
        assert get(f"http://127.0.0.1:{port}/", {HEADER: same_kid})[1]["error"] \
            == "bad_signature"
        assert get(f"http://127.0.0.1:{port}/", {HEADER: own_kid})[1]["error"] \
            == "unknown_kid"


def test_alg_none_and_hmac_confusion_are_refused(stack: Stack) -> None:
    real_header, real = unverified(shop_token(stack))
    none = forge({"alg": "none", "kid": real_header["kid"], "typ": TOKEN_TYPE},
                 {**real, "jti": "none-1"})
    jwks = json.loads(urllib.request.urlopen(stack.gateway.jwks_url, timeout=5).read())
    # The classic confusion: sign with HS256, using the published public key as the secret.
    public = jwt.PyJWK(jwks["keys"][0]).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    unsigned = forge({"alg": "HS256", "kid": real_header["kid"], "typ": TOKEN_TYPE},
                     {**real, "jti": "hs-1"}).rsplit(".", 1)[0]
    mac = hmac.new(public, unsigned.encode(), hashlib.sha256).digest()
    confused = unsigned + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    for token in (none, confused):
        status, body = get(f"http://127.0.0.1:{stack.shop.port}/", {HEADER: token})
        assert (status, body["error"]) == (401, "unexpected_alg")


def test_client_injected_assertion_never_reaches_the_partner(stack: Stack) -> None:
    token = forge({"alg": "ES256", "kid": "x", "typ": TOKEN_TYPE}, {"sub": "me"}, b"sig")
    # 127.0.0.3 has no binding: the gateway strips the client's copies (every spelling)
    # and adds none, so the partner sees no assertion at all.
    for name in (HEADER, "x-operator-assertion", "X_Operator_Assertion"):
        status, body = curl(stack.gateway.proxy, "http://shop.test/",
                            "--interface", "127.0.0.3", "-H", f"{name}: {token}")
        assert (status, body["error"]) == (401, "missing"), name
    # A subscriber's own forged copy is replaced by the gateway's single real one.
    status, body = curl(stack.gateway.proxy, "http://shop.test/", "-H", f"{HEADER}: {token}")
    assert status == 200 and body["raw"] != token


def test_jwks_is_published_with_cache_headers(stack: Stack) -> None:
    with urllib.request.urlopen(stack.gateway.jwks_url, timeout=5) as response:
        assert response.headers["Cache-Control"] == "public, max-age=300"
        assert response.headers["Content-Type"] == "application/jwk-set+json"
        etag = response.headers["ETag"]
        keys = json.loads(response.read())["keys"]
    assert [k["alg"] for k in keys] == ["ES256"] and all("d" not in k for k in keys)
    request = urllib.request.Request(stack.gateway.jwks_url, headers={"If-None-Match": etag})
    try:
        urllib.request.urlopen(request, timeout=5)
        raise AssertionError("expected 304")
    except urllib.error.HTTPError as exc:
        assert exc.code == 304


def test_rotation_old_assertions_verify_until_expiry_new_use_new_kid(tmp_path: Path) -> None:
    """Rotate a running gateway's key: within a second it signs with the new kid, the
    partner (whose JWKS cache predates the rotation) refetches and accepts it, and the old
    assertion still verifies against the published JWKS until it expires."""
    web_port = free_port()
    shop = WsgiPartner.start("shop-partner", f"http://127.0.0.1:{web_port}/.well-known/jwks.json",
                             leeway=30)
    gw = start_gateway(tmp_path / "rot", {"shop.test": shop.port}, ttl=60, web_port=web_port)
    try:
        status, first = curl(gw.proxy, "http://shop.test/")
        assert status == 200, first
        old, old_kid = first["raw"], first["kid"]
        new_key, retired = KeyDirectory(gw.key_dir).rotate("ES256", now=time.time())
        assert retired is not None and retired.kid == old_kid
        deadline = time.monotonic() + 5
        while True:
            status, body = curl(gw.proxy, "http://shop.test/")
            assert status == 200, body  # accepted throughout: the app refetches new kids
            if body["kid"] != old_kid or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert body["kid"] == new_key.kid != old_kid
        jwks = json.loads(urllib.request.urlopen(gw.jwks_url, timeout=5).read())
        assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_key.kid}
        keys = KeySet.from_jwks(jwks)
        assert verify(old, "shop-partner", keys, replay=None).kid == old_kid
        assert verify(body["raw"], "shop-partner", keys, replay=None).kid == new_key.kid
        with pytest.raises(Expired):
            verify(old, "shop-partner", keys, replay=None, now=unverified(old)[1]["exp"] + 31)
        assert not (gw.key_dir / f"{old_kid}.pem").exists()  # nothing can sign with it again
        assert f"now signing with kid {new_key.kid}" in gw.log()
    finally:
        gw.stop()
        shop.stop()
