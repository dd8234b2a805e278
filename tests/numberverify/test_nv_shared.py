"""Two real `linewarden serve` instances on one real redis-server (`[store] url`): the grants
are shared, so no sticky routing is needed, and each code and token is good once across
both. Also, through the real gateway: the per-client rate limit counted across instances,
Commonalities 404/405 bodies, the deprecated /v0 alias, and the id_token verified with the
JWKS either instance publishes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from nv_support import SHOP_SECRET, sha

from bindings.redis_server import RedisServer
from linewarden.claims import Secrets, pseudonym
from lwtest import MSISDN_2, Gateway, gateway_config, launch_serve

ISSUER = "https://operator.test"  # [numberverify] issuer: the name behind the balancer
REDIRECT = "https://shop.test/cb"
VERIFY = "number-verification:verify"
DEVICE = "127.0.0.2"  # bound to MSISDN_2 in lwtest's config
RATE_LIMIT = 5  # per minute per client: above the shop-client calls of this whole module
PARTNERS = f"""
[[partners]]
id = "shop"
purpose = "fraud_prevention"
hosts = ["shop.test"]
[partners.oauth]
client_id = "shop-client"
redirect_uris = ["{REDIRECT}"]
client_secret_sha256 = "{sha(SHOP_SECRET)}"
scopes = ["{VERIFY}"]

[[partners]]
id = "burst"
purpose = "fraud_prevention"
hosts = ["burst.test"]
[partners.oauth]
client_id = "burst-client"
redirect_uris = ["https://burst.test/cb"]
client_secret_sha256 = "{sha(SHOP_SECRET)}"
scopes = ["{VERIFY}"]
"""


@dataclass
class Pair:
    a: Gateway
    b: Gateway
    redis: RedisServer


def _start(directory: Path, redis_url: str, keys: Path) -> Gateway:
    extra = f"""
[store]
url = "{redis_url}"
prefix = "nvshared:"

[signing]
key_dir = "{keys}"

[numberverify]
issuer = "{ISSUER}"
rate_limit = {RATE_LIMIT}
"""

    def write(proxy_port: int, web_port: int) -> Path:
        config = directory / "linewarden.toml"
        config.write_text(gateway_config(directory, 9, proxy_port=proxy_port,
                                         web_port=web_port, partners=PARTNERS, extra=extra))
        return config

    proc, proxy_port, web_port, config = launch_serve(directory, write)
    return Gateway(proc, proxy_port, web_port, directory, config)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("nv-shared")
    redis = RedisServer(root / "redis").start()
    started: list[Gateway] = []
    try:
        started.append(_start(root / "a", redis.url, root / "keys"))
        started.append(_start(root / "b", redis.url, root / "keys"))
        yield Pair(started[0], started[1], redis)
    finally:
        for gateway in started:
            gateway.stop()
        redis.stop()


def code_from(gateway: Gateway, nonce: str = "", client: str = "shop") -> str:
    """The device authorizes at `gateway` (network authentication by its address)."""
    params = {"response_type": "code", "client_id": f"{client}-client",
              "redirect_uri": f"https://{client}.test/cb", "scope": f"openid {VERIFY}",
              "state": "st", "prompt": "none"}
    if nonce:
        params["nonce"] = nonce
    with httpx.Client(transport=httpx.HTTPTransport(local_address=DEVICE),
                      trust_env=False) as device:
        response = device.get(gateway.web + "/oauth/authorize", params=params)
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]


def redeem(gateway: Gateway, code: str, client: str = "shop") -> httpx.Response:
    return httpx.post(gateway.web + "/oauth/token", auth=(f"{client}-client", SHOP_SECRET),
                      data={"grant_type": "authorization_code", "code": code,
                            "redirect_uri": f"https://{client}.test/cb"}, trust_env=False)


def verify(gateway: Gateway, token: str, path: str = "/number-verification/v2/verify"
           ) -> httpx.Response:
    return httpx.post(gateway.web + path, json={"phoneNumber": "+" + MSISDN_2},
                      headers={"Authorization": f"Bearer {token}"}, trust_env=False)


def test_code_from_a_redeemed_at_b_once(pair: Pair) -> None:
    code = code_from(pair.a, nonce="n-shared")
    at_b = redeem(pair.b, code)
    assert at_b.status_code == 200, at_b.text
    again_at_a = redeem(pair.a, code)
    assert again_at_a.status_code == 400 and again_at_a.json()["error"] == "invalid_grant"
    again_at_b = redeem(pair.b, code)
    assert again_at_b.json()["error"] == "invalid_grant"

    # The token from B answers once, at A; then it is gone at both.
    token = at_b.json()["access_token"]
    assert verify(pair.a, token).json() == {"devicePhoneNumberVerified": True}
    for gateway in (pair.b, pair.a):
        used = verify(gateway, token)
        assert used.status_code == 401 and used.json()["code"] == "UNAUTHENTICATED"

    # B's id_token verifies with A's JWKS (one key directory), for the configured issuer.
    id_token = at_b.json()["id_token"]
    keys = jwt.PyJWKClient(pair.a.web + "/.well-known/jwks.json")
    claims = jwt.decode(id_token, keys.get_signing_key_from_jwt(id_token),
                        algorithms=["ES256", "EdDSA"], audience="shop-client", issuer=ISSUER)
    assert claims["nonce"] == "n-shared"
    expected = pseudonym(Secrets(pseudonym_secret=b"test-pseudonym-secret", ledger_key=b""),
                         "shop", MSISDN_2)
    assert claims["sub"] == expected and MSISDN_2 not in id_token
    metadata = httpx.get(pair.b.web + "/.well-known/openid-configuration",
                         trust_env=False).json()
    assert metadata["issuer"] == ISSUER
    assert metadata["jwks_uri"] == ISSUER + "/.well-known/jwks.json"


def test_a_nonce_is_spent_on_every_instance(pair: Pair) -> None:
    code_from(pair.a, nonce="n-once")
    with httpx.Client(transport=httpx.HTTPTransport(local_address=DEVICE),
                      trust_env=False) as device:
        replay = device.get(pair.b.web + "/oauth/authorize", params={
            "response_type": "code", "client_id": "shop-client", "redirect_uri": REDIRECT,
            "scope": f"openid {VERIFY}", "state": "st", "prompt": "none",
            "nonce": "n-once"})
    query = parse_qs(urlsplit(replay.headers["location"]).query)
    assert query["error"] == ["invalid_request"] and "code" not in query


def test_rate_limit_is_per_client_across_instances(pair: Pair) -> None:
    """RATE_LIMIT calls a minute for the client, counted in Redis: spread over A and B,
    the next one is 429 TOO_MANY_REQUESTS (Commonalities body, Retry-After)."""
    if time.time() % 60 > 50:  # all calls in one fixed window: start early in one
        time.sleep(60.5 - time.time() % 60)
    tokens = [redeem(pair.a, code_from(pair.a, client="burst"), client="burst"
                     ).json()["access_token"] for _ in range(RATE_LIMIT + 1)]
    answers = [verify(gateway, token) for gateway, token
               in zip([pair.a, pair.b] * RATE_LIMIT, tokens, strict=False)]
    assert [r.status_code for r in answers] == [200] * RATE_LIMIT + [429]
    refused = answers[-1]
    assert refused.json() == {"status": 429, "code": "TOO_MANY_REQUESTS",
                              "message": "Rate limit reached."}
    assert 0 < int(refused.headers["retry-after"]) <= 61
    # The refused call used its token up too: one call per token, whatever the outcome.
    assert verify(pair.a, tokens[-1]).status_code == 401
    # Another client of the same operator is not held back by this one's count.
    other = redeem(pair.b, code_from(pair.b)).json()["access_token"]
    assert verify(pair.b, other).status_code == 200


def test_not_found_and_method_not_allowed_are_commonalities_json(pair: Pair) -> None:
    missing = httpx.get(pair.a.web + "/number-verification/v2/nothing", trust_env=False,
                        headers={"x-correlator": "c-404"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.headers["x-correlator"] == "c-404"
    assert missing.json() == {"status": 404, "code": "NOT_FOUND",
                              "message": "The specified resource is not found."}
    wrong = httpx.get(pair.a.web + "/number-verification/v2/verify", trust_env=False)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["code"] == "METHOD_NOT_ALLOWED" and wrong.json()["status"] == 405
    assert httpx.delete(pair.b.web + "/number-verification/v2/device-phone-number",
                        trust_env=False).json()["code"] == "METHOD_NOT_ALLOWED"
    # HEAD too: it would use a token up and record an answer nobody receives.
    token = redeem(pair.a, code_from(pair.a)).json()["access_token"]
    head = httpx.head(pair.a.web + "/number-verification/v2/device-phone-number",
                      headers={"Authorization": f"Bearer {token}"}, trust_env=False)
    assert head.status_code == 405 and head.headers["allow"] == "GET"
    assert verify(pair.b, token).json() == {"devicePhoneNumberVerified": True}


def test_v0_is_a_deprecated_alias(pair: Pair) -> None:
    token = redeem(pair.a, code_from(pair.a)).json()["access_token"]
    response = verify(pair.b, token, "/number-verification/v0/verify")
    assert response.json() == {"devicePhoneNumberVerified": True}
    assert response.headers["deprecation"].startswith("@")
    assert 'rel="successor-version"' in response.headers["link"]
