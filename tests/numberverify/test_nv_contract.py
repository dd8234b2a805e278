"""Contract tests: schemathesis drives the endpoints from the published OpenAPI document
and checks every answer against it (status codes, content type, response schemas)."""

from __future__ import annotations

import json
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from nv_support import LEDGER_KEY, MSISDN_A, ListRecorder, bound_store, make_policy
from starlette.applications import Starlette

from linewarden.numberverify.api import NumberVerification, api_routes, oauth_routes
from linewarden.numberverify.grants import Grant
from linewarden.numberverify.openapi import BASE_PATH, openapi_document

ROOT = Path(__file__).resolve().parents[2]
POLICY = make_policy("https://shop.test/cb", "https://carrier.test/cb")
NV = NumberVerification(lambda: POLICY, bound_store(), ListRecorder(), LEDGER_KEY)
APP = Starlette(routes=[*oauth_routes(NV), *api_routes(NV)])
schema = schemathesis.openapi.from_asgi(f"{BASE_PATH}/openapi.json", APP)


def fresh_token() -> str:
    """A token as /oauth/token would issue to the carrier (both scopes) for MSISDN_A."""
    token = NV.grants.issue_token(Grant(
        "carrier-client", "carrier", MSISDN_A,
        "number-verification:verify number-verification:device-phone-number:read",
        "https://carrier.test/cb", 0.0))
    assert token is not None
    return token


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {fresh_token()}"})


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_without_a_token(case: schemathesis.Case) -> None:
    case.call_and_validate()


def test_published_copy_is_current() -> None:
    published = json.loads((ROOT / "docs" / "numberverify-openapi.json").read_text())
    assert published == openapi_document()


def test_the_contract_run_reached_the_answers() -> None:
    """The generated calls got past validation to real answers (ledger rows for both)."""
    recorder = NV.recorder
    assert isinstance(recorder, ListRecorder)
    claims = {row.claims for row in recorder.rows}
    assert claims == {("number_verified",), ("msisdn",)}
