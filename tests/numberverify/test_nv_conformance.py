"""Conformance with the published test definitions of CAMARA Number Verification r3.2
(`number-verification-phoneNumberVerify.feature`, `...-phoneNumberShare.feature`, API
2.1.0), written from what their scenarios specify, at the published base path.

Every access token comes from the real OpenID Connect code flow: the device's browser, on
127.0.0.2 (bound to MSISDN_A), asks /oauth/authorize with prompt=none and the partner
exchanges the code at /oauth/token with its secret. Every request carries the feature's
Background: Content-Type application/json, a valid token, an x-correlator that complies
with the XCorrelator schema. Each scenario runs against both grant stores (this process's
memory, and a real redis-server).

`CONFORMANCE` maps every (operation, tag) of the published files to the test that drives it,
or to the reason it cannot apply; a test checks that the map and the files agree.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonschema_rs
import pytest
from nv_support import (
    CARRIER_SECRET,
    MSISDN_A,
    MSISDN_B,
    SHOP_SECRET,
    Clock,
    Operator,
    make_policy,
    sha,
    start_operator,
)
from published import SHARE_FEATURE, VERIFY_FEATURE, published_openapi, scenarios

from linewarden.numberverify.grants import TOKEN_TTL, GrantStore
from linewarden.numberverify.redisgrants import RedisGrants

BASE = "/number-verification/v2"  # the feature files' Background
VERIFY = "number-verification:verify"
READ = "number-verification:device-phone-number:read"
SHOP_REDIRECT = "https://shop.test/cb"
CARRIER_REDIRECT = "https://carrier.test/cb"
DEVICE = "127.0.0.2"  # bound to MSISDN_A

NOT_NETWORK_AUTH = ("needs a token obtained without network-based or SIM-based "
                    "authentication; this authorization server has no other way to "
                    "authenticate a subscriber, so it never issues one (the 403 code stays "
                    "in the contract)")
CONFORMANCE: dict[tuple[str, str], str] = {
    ("phoneNumberVerify", "phone_number_verify_01_generic_success_scenario"):
        "test_verify_01_generic_success",
    ("phoneNumberVerify", "phone_number_verify.02_validate_phone_number_success_true"):
        "test_verify_02_phone_number_true",
    ("phoneNumberVerify", "phone_number_verify.03_validate_phone_number_success_false"):
        "test_verify_03_phone_number_false",
    ("phoneNumberVerify",
     "phone_number_verify.04_validate_hashed_phone_number_success_true"):
        "test_verify_04_hashed_true",
    ("phoneNumberVerify",
     "phone_number_verify.05_validate_hashed_phone_number_success_false"):
        "test_verify_05_hashed_false",
    ("phoneNumberVerify", "phone_number_verify_400.1_no_request_body"):
        "test_verify_400_1_no_request_body",
    ("phoneNumberVerify", "phone_number_verify_400.2_empty_request_body"):
        "test_verify_400_2_empty_request_body",
    ("phoneNumberVerify", "phone_number_verify_400.3_invalid_request_non_existing_property"):
        "test_verify_400_3_non_existing_property",
    ("phoneNumberVerify", "phone_number_verify_400.4_both_phone_number_and_hashed_in_request"):
        "test_verify_400_4_both",
    ("phoneNumberVerify", "phone_number_verify_401.1_no_authorization_header"):
        "test_401_1_no_authorization_header[phoneNumberVerify]",
    ("phoneNumberVerify", "phone_number_verify_401.2_expired_access_token"):
        "test_401_2_expired_access_token[phoneNumberVerify]",
    ("phoneNumberVerify", "phone_number_verify_401.3_invalid_access_token"):
        "test_401_3_invalid_access_token[phoneNumberVerify]",
    ("phoneNumberVerify", "phoneNumberVerify_403.1_invalid_token_permissions"):
        "test_403_1_token_without_the_scope[phoneNumberVerify]",
    ("phoneNumberVerify",
     "phoneNumberVerify_403.2_not_authenticated_using_network_or_sim_based_authentication"):
        "n/a: " + NOT_NETWORK_AUTH,
    ("phoneNumberVerify", "phone_number_verify_C02.01_phone_number_not_schema_compliant"):
        "test_verify_c02_01_phone_number_not_schema_compliant",
    ("phoneNumberShare", "phone_number_share_01_generic_success_scenario"):
        "test_share_01_generic_success",
    ("phoneNumberShare", "phone_number_share_02_success_scenario"):
        "test_share_02_success",
    # The share feature reuses the verify feature's 401 tags.
    ("phoneNumberShare", "phone_number_verify_401.1_no_authorization_header"):
        "test_401_1_no_authorization_header[phoneNumberShare]",
    ("phoneNumberShare", "phone_number_verify_401.2_expired_access_token"):
        "test_401_2_expired_access_token[phoneNumberShare]",
    ("phoneNumberShare", "phone_number_verify_401.3_invalid_access_token"):
        "test_401_3_invalid_access_token[phoneNumberShare]",
    ("phoneNumberShare", "phoneNumberShare_403.1_invalid_token_permissions"):
        "test_403_1_token_without_the_scope[phoneNumberShare]",
    ("phoneNumberShare",
     "phoneNumberShare_403.2_not_authenticated_using_network_or_sim_based_authentication"):
        "n/a: " + NOT_NETWORK_AUTH,
}


def test_every_published_scenario_is_accounted_for() -> None:
    published = {(s.feature, s.tag) for path in (VERIFY_FEATURE, SHARE_FEATURE)
                 for s in scenarios(path)}
    assert len(published) == 22
    assert published == set(CONFORMANCE)
    tests = {name.split("[")[0] for name in CONFORMANCE.values() if not name.startswith("n/a")}
    assert all(callable(globals().get(name)) for name in tests), tests


# ---------------------------------------------------------------- the operator under test

@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from bindings.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory)).start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="module", params=["memory", "redis"])
def op(request: pytest.FixtureRequest) -> Iterator[Operator]:
    grants: Callable[[Clock], GrantStore] | None = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")

        def grants(clock: Clock) -> GrantStore:
            return RedisGrants(url, prefix="conformance:", clock=clock)

    operator = start_operator(make_policy(SHOP_REDIRECT, CARRIER_REDIRECT), grants=grants)
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture(autouse=True)
def _reset(op: Operator) -> None:
    op.clock.offset = 0.0
    op.recorder.rows.clear()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return published_openapi()


def token(op: Operator, *, partner: str = "shop", scope: str = VERIFY) -> str:
    """The OIDC code flow: the device authorizes (network authentication), the partner
    redeems the code with its secret."""
    client_id, secret, redirect = (("shop-client", SHOP_SECRET, SHOP_REDIRECT)
                                   if partner == "shop" else
                                   ("carrier-client", CARRIER_SECRET, CARRIER_REDIRECT))
    with httpx.Client(transport=httpx.HTTPTransport(local_address=DEVICE),
                      trust_env=False) as device:
        found = device.get(op.url + "/oauth/authorize", params={
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect,
            "scope": f"openid {scope}", "state": uuid.uuid4().hex,
            "nonce": uuid.uuid4().hex, "prompt": "none"})
    assert found.status_code == 302, found.text
    code = parse_qs(urlsplit(found.headers["location"]).query)["code"][0]
    issued = httpx.post(op.url + "/oauth/token", auth=(client_id, secret), trust_env=False,
                        data={"grant_type": "authorization_code", "code": code,
                              "redirect_uri": redirect})
    assert issued.status_code == 200, issued.text
    return str(issued.json()["access_token"])


def call(op: Operator, operation: str, access_token: str | None, body: Any = None, *,
         raw: bytes | None = None) -> tuple[httpx.Response, str]:
    """The Background: Content-Type, Authorization, a schema-compliant x-correlator."""
    correlator = str(uuid.uuid4())
    headers = {"Content-Type": "application/json", "x-correlator": correlator}
    if access_token is not None:
        headers["Authorization"] = f"Bearer {access_token}"
    if operation == "phoneNumberVerify":
        content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        response = httpx.post(op.url + BASE + "/verify", content=content, headers=headers,
                              trust_env=False)
    else:
        response = httpx.get(op.url + BASE + "/device-phone-number", headers=headers,
                             trust_env=False)
    return response, correlator


def complies(schema: dict[str, Any], name: str, value: Any) -> None:
    jsonschema_rs.validate({"$ref": f"#/components/schemas/{name}",
                            "components": schema["components"]}, value)


def error(response: httpx.Response, correlator: str, status: int, code: str) -> None:
    """"the response property $.status is S, $.code is C, $.message contains a user
    friendly text", with the correlator echoed (Commonalities)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-correlator"] == correlator
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert isinstance(body["message"], str) and len(body["message"]) > 10
    assert MSISDN_A not in body["message"]


# ---------------------------------------------------------------- phoneNumberVerify

def test_verify_01_generic_success(op: Operator, schema: dict[str, Any]) -> None:
    response, correlator = call(op, "phoneNumberVerify", token(op),
                                {"phoneNumber": "+" + MSISDN_A})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-correlator"] == correlator
    complies(schema, "NumberVerificationMatchResponse", response.json())


def test_verify_02_phone_number_true(op: Operator) -> None:
    response, _ = call(op, "phoneNumberVerify", token(op), {"phoneNumber": "+" + MSISDN_A})
    assert response.status_code == 200
    assert response.json()["devicePhoneNumberVerified"] is True


def test_verify_03_phone_number_false(op: Operator) -> None:
    response, _ = call(op, "phoneNumberVerify", token(op), {"phoneNumber": "+" + MSISDN_B})
    assert response.status_code == 200
    assert response.json()["devicePhoneNumberVerified"] is False


def test_verify_04_hashed_true(op: Operator) -> None:
    response, _ = call(op, "phoneNumberVerify", token(op),
                       {"hashedPhoneNumber": sha("+" + MSISDN_A)})
    assert response.status_code == 200
    assert response.json()["devicePhoneNumberVerified"] is True


def test_verify_05_hashed_false(op: Operator) -> None:
    response, _ = call(op, "phoneNumberVerify", token(op),
                       {"hashedPhoneNumber": sha("+" + MSISDN_B)})
    assert response.status_code == 200
    assert response.json()["devicePhoneNumberVerified"] is False


def test_verify_400_1_no_request_body(op: Operator) -> None:
    error(*call(op, "phoneNumberVerify", token(op), raw=b""), 400, "INVALID_ARGUMENT")


def test_verify_400_2_empty_request_body(op: Operator) -> None:
    error(*call(op, "phoneNumberVerify", token(op), {}), 400, "INVALID_ARGUMENT")


def test_verify_400_3_non_existing_property(op: Operator) -> None:
    error(*call(op, "phoneNumberVerify", token(op), {"additional_property": "foo_value"}),
          400, "INVALID_ARGUMENT")


def test_verify_400_4_both(op: Operator, schema: dict[str, Any]) -> None:
    body = {"phoneNumber": "+" + MSISDN_A, "hashedPhoneNumber": sha("+" + MSISDN_A)}
    complies(schema, "NumberVerificationRequestBody/properties/phoneNumber",
             body["phoneNumber"])
    complies(schema, "NumberVerificationRequestBody/properties/hashedPhoneNumber",
             body["hashedPhoneNumber"])
    error(*call(op, "phoneNumberVerify", token(op), body), 400, "INVALID_ARGUMENT")


def test_verify_c02_01_phone_number_not_schema_compliant(op: Operator,
                                                         schema: dict[str, Any]) -> None:
    """The scenario's precondition, a token "which does not identify a single phone
    number", cannot be met (every token here identifies one); what it checks can: a
    phoneNumber outside the schema is INVALID_ARGUMENT."""
    for bad in (MSISDN_A, "+44 7400 900222", "+0447400900222", "+4474009002221234", "+44"):
        with pytest.raises(jsonschema_rs.ValidationError):
            complies(schema, "NumberVerificationRequestBody/properties/phoneNumber", bad)
        error(*call(op, "phoneNumberVerify", token(op), {"phoneNumber": bad}),
              400, "INVALID_ARGUMENT")
    assert op.recorder.rows == []


# ---------------------------------------------------------------- phoneNumberShare

def test_share_01_generic_success(op: Operator, schema: dict[str, Any]) -> None:
    response, correlator = call(op, "phoneNumberShare",
                                token(op, partner="carrier", scope=READ))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-correlator"] == correlator
    complies(schema, "NumberVerificationShareResponse", response.json())


def test_share_02_success(op: Operator) -> None:
    response, _ = call(op, "phoneNumberShare", token(op, partner="carrier", scope=READ))
    assert response.status_code == 200
    assert response.json()["devicePhoneNumber"] == "+" + MSISDN_A
    [row] = op.recorder.rows
    assert row.claims == ("msisdn",) and row.partner_id == "carrier"


# ---------------------------------------------------------------- both operations

OPERATIONS = ["phoneNumberVerify", "phoneNumberShare"]
# A token each operation accepts, and one without that operation's scope.
RIGHT = {"phoneNumberVerify": ("shop", VERIFY), "phoneNumberShare": ("carrier", READ)}
WRONG = {"phoneNumberVerify": ("carrier", READ), "phoneNumberShare": ("shop", VERIFY)}
VALID_BODY = {"phoneNumber": "+" + MSISDN_A}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_401_1_no_authorization_header(op: Operator, operation: str) -> None:
    error(*call(op, operation, None, VALID_BODY), 401, "UNAUTHENTICATED")


@pytest.mark.parametrize("operation", OPERATIONS)
def test_401_2_expired_access_token(op: Operator, operation: str) -> None:
    partner, scope = RIGHT[operation]
    expired = token(op, partner=partner, scope=scope)
    op.clock.offset = TOKEN_TTL + 1
    error(*call(op, operation, expired, VALID_BODY), 401, "UNAUTHENTICATED")
    assert op.recorder.rows == []


@pytest.mark.parametrize("operation", OPERATIONS)
def test_401_3_invalid_access_token(op: Operator, operation: str) -> None:
    for invalid in ("not-a-token", uuid.uuid4().hex * 2, token(op) + "x"):
        error(*call(op, operation, invalid, VALID_BODY), 401, "UNAUTHENTICATED")
    assert op.recorder.rows == []


@pytest.mark.parametrize("operation", OPERATIONS)
def test_403_1_token_without_the_scope(op: Operator, operation: str) -> None:
    partner, scope = WRONG[operation]
    error(*call(op, operation, token(op, partner=partner, scope=scope), VALID_BODY),
          403, "PERMISSION_DENIED")
    assert op.recorder.rows == []
