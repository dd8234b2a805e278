"""End to end: browser (from 127.0.0.2 / .3 / .4) -> sample partner app -> /oauth/authorize
-> partner callback -> /oauth/token -> /number-verification/v2/*, all over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nv_support import (
    CARRIER_SECRET,
    LEDGER_KEY,
    MSISDN_A,
    MSISDN_B,
    SHOP_SECRET,
    Operator,
    device,
    load_example,
    make_policy,
    sha,
    start_operator,
)

from linewarden.claims import subscriber_key

VERIFY = "number-verification:verify"
READ = "number-verification:device-phone-number:read"
KEY = ec.generate_private_key(ec.SECP256R1())
KEY_PEM = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
KEYED_REDIRECT = "https://keyed.test/cb"
KEYED = f'''
[[partners]]
id = "keyed"
purpose = "fraud_prevention"
hosts = ["keyed.test"]
[partners.oauth]
client_id = "keyed-client"
redirect_uris = ["{KEYED_REDIRECT}"]
public_key = """{KEY_PEM}"""
scopes = ["number-verification:verify"]
'''


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    example = load_example()
    shop = example.PartnerApp("", "shop-client", SHOP_SECRET)
    carrier = example.PartnerApp("", "carrier-client", CARRIER_SECRET)
    servers = [example.make_server(shop), example.make_server(carrier)]
    import threading

    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    op = start_operator(make_policy(shop.redirect_uri, carrier.redirect_uri, KEYED))
    shop.operator = carrier.operator = op.url
    shop_url = f"http://127.0.0.1:{servers[0].server_address[1]}"
    carrier_url = f"http://127.0.0.1:{servers[1].server_address[1]}"
    try:
        yield {"op": op, "shop": shop, "carrier": carrier, "shop_url": shop_url,
               "carrier_url": carrier_url}
    finally:
        op.stop()
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(autouse=True)
def _reset(world: dict[str, Any]) -> None:
    op: Operator = world["op"]
    op.clock.offset = 0.0
    op.recorder.accept = True
    op.recorder.rows.clear()


def flow(world: dict[str, Any], address: str, phone: str, **params: str) -> httpx.Response:
    """The browser on `address` starts at the shop and follows every redirect."""
    with device(address) as browser:
        return browser.get(world["shop_url"] + "/start", params={"phone": phone, **params})


def authorize(op: Operator, address: str, redirect: str, *, client_id: str = "shop-client",
              scope: str = VERIFY, prompt: str | None = "none", openid: bool = True,
              **extra: str) -> httpx.Response:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect,
              "scope": f"openid {scope}" if openid else scope, "state": "st-1", **extra}
    if prompt is not None:
        params["prompt"] = prompt
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address),
                      trust_env=False) as browser:
        return browser.get(op.url + "/oauth/authorize", params=params)


def query_of(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def exchange(op: Operator, code: str, redirect: str, client: tuple[str, str],
             **extra: str) -> httpx.Response:
    return httpx.post(op.url + "/oauth/token", auth=client, trust_env=False,
                      data={"grant_type": "authorization_code", "code": code,
                            "redirect_uri": redirect, **extra})


def access_token(world: dict[str, Any], address: str = "127.0.0.2", *,
                 partner: str = "shop", scope: str = VERIFY) -> str:
    op: Operator = world["op"]
    app = world[partner]
    secret = SHOP_SECRET if partner == "shop" else CARRIER_SECRET
    code = query_of(authorize(op, address, app.redirect_uri, client_id=app.client_id,
                              scope=scope))["code"]
    response = exchange(op, code, app.redirect_uri, (app.client_id, secret))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def verify(op: Operator, token: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(op.url + "/number-verification/v2/verify", json=body, trust_env=False,
                      headers={"Authorization": f"Bearer {token}"})


# ---------------------------------------------------------------- the partner's view

def test_right_number_verifies_true_from_both_subscribers(world: dict[str, Any]) -> None:
    for address, msisdn in (("127.0.0.2", MSISDN_A), ("127.0.0.3", MSISDN_B)):
        response = flow(world, address, "+" + msisdn)
        assert response.status_code == 200
        assert response.json() == {"devicePhoneNumberVerified": True}
    rows = world["op"].recorder.rows
    assert [r.claims for r in rows] == [("number_verified",)] * 2
    assert [r.subscriber_key for r in rows] == [subscriber_key(LEDGER_KEY, MSISDN_A),
                                                subscriber_key(LEDGER_KEY, MSISDN_B)]
    assert {(r.partner_id, r.purpose, r.host) for r in rows} == \
        {("shop", "fraud_prevention", "127.0.0.1")}
    assert not any(MSISDN_A in repr(r) or MSISDN_B in repr(r) for r in rows)


def test_another_number_verifies_false(world: dict[str, Any]) -> None:
    assert flow(world, "127.0.0.2", "+" + MSISDN_B).json() == \
        {"devicePhoneNumberVerified": False}
    assert flow(world, "127.0.0.3", "+" + MSISDN_A).json() == \
        {"devicePhoneNumberVerified": False}
    assert len(world["op"].recorder.rows) == 2  # a "no" is an answer about them too


def test_hashed_form(world: dict[str, Any]) -> None:
    assert flow(world, "127.0.0.2", "+" + MSISDN_A, hashed="1").json() == \
        {"devicePhoneNumberVerified": True}
    assert flow(world, "127.0.0.2", "+" + MSISDN_B, hashed="1").json() == \
        {"devicePhoneNumberVerified": False}
    # Upper-case hex is the same hash; a hash of the number without '+' is another
    # number's hash (CAMARA since 1.0.0): false, as at every conforming operator.
    token = access_token(world)
    assert verify(world["op"], token, {"hashedPhoneNumber": sha("+" + MSISDN_A).upper()}
                  ).json() == {"devicePhoneNumberVerified": True}
    token = access_token(world)
    assert verify(world["op"], token, {"hashedPhoneNumber": sha(MSISDN_A)}).json() == \
        {"devicePhoneNumberVerified": False}


def test_no_binding_no_code(world: dict[str, Any]) -> None:
    response = flow(world, "127.0.0.4", "+" + MSISDN_A)
    assert response.status_code == 403
    assert response.json()["error"] == "login_required"
    assert world["op"].recorder.rows == []
    # Without prompt=none the same refusal is access_denied; never a code.
    query = query_of(authorize(world["op"], "127.0.0.4", world["shop"].redirect_uri,
                               prompt=None))
    assert query["error"] == "access_denied" and "code" not in query
    assert query["state"] == "st-1"


# ---------------------------------------------------------------- tokens

def test_token_response_shape(world: dict[str, Any]) -> None:
    op, shop = world["op"], world["shop"]
    code = query_of(authorize(op, "127.0.0.2", shop.redirect_uri))["code"]
    response = exchange(op, code, shop.redirect_uri, ("shop-client", SHOP_SECRET))
    body = response.json()
    assert response.status_code == 200
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 300
    assert "refresh_token" not in body and body["scope"] == f"openid {VERIFY}"
    assert body["id_token"].count(".") == 2
    assert response.headers["cache-control"] == "no-store"


def test_replayed_token_refused(world: dict[str, Any]) -> None:
    assert flow(world, "127.0.0.2", "+" + MSISDN_A).json() == \
        {"devicePhoneNumberVerified": True}
    with httpx.Client(trust_env=False) as client:
        used = client.get(world["shop_url"] + "/last-token").json()["access_token"]
    response = verify(world["op"], used, {"phoneNumber": "+" + MSISDN_A})
    assert response.status_code == 401
    assert response.json() == {"status": 401, "code": "UNAUTHENTICATED",
                               "message": response.json()["message"]}
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert len(world["op"].recorder.rows) == 1


def test_expired_token_refused(world: dict[str, Any]) -> None:
    op = world["op"]
    token = access_token(world)
    op.clock.offset = 301
    assert verify(op, token, {"phoneNumber": "+" + MSISDN_A}).status_code == 401
    assert op.recorder.rows == []


def test_expired_or_reused_code_refused(world: dict[str, Any]) -> None:
    op, shop = world["op"], world["shop"]
    code = query_of(authorize(op, "127.0.0.2", shop.redirect_uri))["code"]
    op.clock.offset = 61
    response = exchange(op, code, shop.redirect_uri, ("shop-client", SHOP_SECRET))
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    op.clock.offset = 0
    code = query_of(authorize(op, "127.0.0.2", shop.redirect_uri))["code"]
    assert exchange(op, code, shop.redirect_uri, ("shop-client", SHOP_SECRET)).is_success
    again = exchange(op, code, shop.redirect_uri, ("shop-client", SHOP_SECRET))
    assert again.json()["error"] == "invalid_grant"


def test_pkce_s256_binds_the_code_to_its_verifier(world: dict[str, Any]) -> None:
    op, shop = world["op"], world["shop"]
    client = ("shop-client", SHOP_SECRET)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}

    def code() -> str:
        return query_of(authorize(op, "127.0.0.2", shop.redirect_uri, **pkce))["code"]

    missing = exchange(op, code(), shop.redirect_uri, client)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    wrong = exchange(op, code(), shop.redirect_uri, client,
                     code_verifier=secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    right = exchange(op, code(), shop.redirect_uri, client, code_verifier=verifier)
    assert right.status_code == 200, right.text
    # A verifier for a code issued without a challenge is refused (RFC 9700 §4.8.2).
    plain_code = query_of(authorize(op, "127.0.0.2", shop.redirect_uri))["code"]
    extra = exchange(op, plain_code, shop.redirect_uri, client, code_verifier=verifier)
    assert extra.status_code == 400 and extra.json()["error"] == "invalid_request"


def test_pkce_plain_method_is_refused(world: dict[str, Any]) -> None:
    op, shop = world["op"], world["shop"]
    for method in ("plain", ""):
        params = {"code_challenge": "a" * 43}
        if method:
            params["code_challenge_method"] = method
        answer = query_of(authorize(op, "127.0.0.2", shop.redirect_uri, **params))
        assert answer.get("error") == "invalid_request" and "code" not in answer


def test_code_is_bound_to_its_client(world: dict[str, Any]) -> None:
    op, shop, carrier = world["op"], world["shop"], world["carrier"]
    code = query_of(authorize(op, "127.0.0.2", shop.redirect_uri))["code"]
    stolen = exchange(op, code, carrier.redirect_uri, ("carrier-client", CARRIER_SECRET))
    assert stolen.json()["error"] == "invalid_grant"
    wrong = exchange(op, "x", shop.redirect_uri, ("shop-client", "not-the-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_unregistered_redirect_is_never_followed(world: dict[str, Any]) -> None:
    response = authorize(world["op"], "127.0.0.2", "https://evil.test/cb")
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.json()["error"] == "invalid_request"


def test_token_bound_to_the_subscriber_not_the_address(world: dict[str, Any]) -> None:
    """The partner's server calls from its own address; the answer is about the device
    that authorized, whoever calls."""
    token = access_token(world, "127.0.0.3")
    assert verify(world["op"], token, {"phoneNumber": "+" + MSISDN_B}).json() == \
        {"devicePhoneNumberVerified": True}


# ---------------------------------------------------------------- scopes

def test_partner_without_read_scope_cannot_read_the_number(world: dict[str, Any]) -> None:
    op, shop = world["op"], world["shop"]
    query = query_of(authorize(op, "127.0.0.2", shop.redirect_uri, scope=READ))
    assert query["error"] == "invalid_scope" and "code" not in query
    token = access_token(world)  # verify scope only
    response = httpx.get(op.url + "/number-verification/v2/device-phone-number",
                         headers={"Authorization": f"Bearer {token}"}, trust_env=False)
    assert response.status_code == 403
    assert response.json()["code"] == "PERMISSION_DENIED"
    assert op.recorder.rows == []


def test_partner_with_read_scope_reads_the_number(world: dict[str, Any]) -> None:
    with device("127.0.0.3") as browser:
        response = browser.get(world["carrier_url"] + "/start", params={"scope": READ})
    assert response.json() == {"devicePhoneNumber": "+" + MSISDN_B}
    [row] = world["op"].recorder.rows
    assert (row.partner_id, row.claims) == ("carrier", ("msisdn",))


def test_read_token_cannot_verify(world: dict[str, Any]) -> None:
    token = access_token(world, partner="carrier", scope=READ)
    response = verify(world["op"], token, {"phoneNumber": "+" + MSISDN_A})
    assert response.status_code == 403


# ---------------------------------------------------------------- the API's edges

@pytest.mark.parametrize("body", [
    {}, {"phoneNumber": "+" + MSISDN_A, "hashedPhoneNumber": sha("+" + MSISDN_A)},
    {"phoneNumber": MSISDN_A}, {"phoneNumber": "+44 7400 900222"},
    {"hashedPhoneNumber": "abc"}, {"phone": "+" + MSISDN_A}, [], "x",
])
def test_invalid_bodies_are_400_and_use_the_token_up(world: dict[str, Any],
                                                     body: Any) -> None:
    """One API call per token, whatever its outcome: a 400 is that call."""
    op = world["op"]
    token = access_token(world)
    response = verify(op, token, body)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_ARGUMENT"
    again = verify(op, token, {"phoneNumber": "+" + MSISDN_A})
    assert again.status_code == 401 and again.json()["code"] == "UNAUTHENTICATED"
    assert op.recorder.rows == []


def test_authorize_without_openid_is_refused(world: dict[str, Any]) -> None:
    query = query_of(authorize(world["op"], "127.0.0.2", world["shop"].redirect_uri,
                               openid=False))
    assert query["error"] == "invalid_scope" and "code" not in query
    assert "openid" in query["error_description"]


def test_ledger_refusal_withholds_the_answer(world: dict[str, Any]) -> None:
    op = world["op"]
    op.recorder.accept = False
    token = access_token(world)
    response = verify(op, token, {"phoneNumber": "+" + MSISDN_A})
    assert response.status_code == 503
    assert response.json()["code"] == "UNAVAILABLE"
    assert "devicePhoneNumberVerified" not in response.text


def test_correlator_echoed(world: dict[str, Any]) -> None:
    token = access_token(world)
    response = httpx.post(world["op"].url + "/number-verification/v2/verify",
                          json={"phoneNumber": "+" + MSISDN_A}, trust_env=False,
                          headers={"Authorization": f"Bearer {token}",
                                   "x-correlator": "abc-123"})
    assert response.headers["x-correlator"] == "abc-123"


def test_missing_token(world: dict[str, Any]) -> None:
    response = httpx.post(world["op"].url + "/number-verification/v2/verify",
                          json={"phoneNumber": "+" + MSISDN_A}, trust_env=False)
    assert response.status_code == 401


# ---------------------------------------------------------------- private_key_jwt

def _assertion(op: Operator, jti: str | None = None) -> str:
    now = int(time.time())
    return jwt.encode({"iss": "keyed-client", "sub": "keyed-client",
                       "aud": op.url + "/oauth/token", "iat": now, "exp": now + 60,
                       "jti": jti or secrets.token_hex(8)}, KEY, algorithm="ES256")


def test_private_key_jwt_client(world: dict[str, Any]) -> None:
    op = world["op"]
    code = query_of(authorize(op, "127.0.0.2", KEYED_REDIRECT, client_id="keyed-client"))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": KEYED_REDIRECT,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": _assertion(op, "jti-1")}
    response = httpx.post(op.url + "/oauth/token", data=form, trust_env=False)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert verify(op, token, {"phoneNumber": "+" + MSISDN_A}).json() == \
        {"devicePhoneNumberVerified": True}
    # The same assertion again (a replay) is refused, even with a fresh code.
    code = query_of(authorize(op, "127.0.0.2", KEYED_REDIRECT, client_id="keyed-client"))["code"]
    replay = httpx.post(op.url + "/oauth/token", data={**form, "code": code}, trust_env=False)
    assert replay.status_code in (400, 401) and replay.json()["error"] == "invalid_client"
    # A secret is no way in for a key-registered client.
    code = query_of(authorize(op, "127.0.0.2", KEYED_REDIRECT, client_id="keyed-client"))["code"]
    by_secret = exchange(op, code, KEYED_REDIRECT, ("keyed-client", "guess"))
    assert by_secret.json()["error"] == "invalid_client"
