"""Contract tests against the *published* OpenAPI document of CAMARA Number Verification
r3.2 (API 2.1.0; see published.py for where it is read from): schemathesis generates calls
from it, valid and invalid, and checks every answer against it (status codes, content
type, headers, response schemas, 401 without credentials, 405 for other methods).

Each generated call carries a fresh access token (both scopes, for MSISDN_A), put in the
grant store as /oauth/token would; the code flow itself is test_nv_conformance.py's.
Also: this project's own document (docs/numberverify-openapi.json) says what the published
one says in paths, operations, schemas, security and error codes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from nv_support import (
    MSISDN_A,
    ListRecorder,
    bound_store,
    make_policy,
    make_secrets,
    policy_text,
)
from published import OPENAPI, available, published, published_openapi, unavailable_reason
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from linewarden.numberverify.api import NumberVerification, api_routes, oauth_routes
from linewarden.numberverify.grants import Grant
from linewarden.numberverify.openapi import BASE_PATH, openapi_document

ROOT = Path(__file__).resolve().parents[2]
POLICY_TEXT = policy_text("https://shop.test/cb", "https://carrier.test/cb")
POLICY = make_policy("https://shop.test/cb", "https://carrier.test/cb")
NV = NumberVerification(lambda: POLICY, bound_store(), ListRecorder(), make_secrets())
PUBLISHED_PATH = "/published-number-verification.json"


async def _published(request: Request) -> Response:
    return JSONResponse(published_openapi())


if not available(OPENAPI):  # schemathesis reads the document while collecting
    pytest.skip(unavailable_reason(OPENAPI), allow_module_level=True)

APP = Starlette(routes=[*oauth_routes(NV), *api_routes(NV),
                        Route(PUBLISHED_PATH, _published)])
schema = schemathesis.openapi.from_asgi(PUBLISHED_PATH, APP)


def fresh_token() -> str:
    """A token as /oauth/token would issue to the carrier (both scopes) for MSISDN_A."""
    token = NV.grant_store.issue_token(Grant(
        "carrier-client", "carrier", MSISDN_A,
        "openid number-verification:verify number-verification:device-phone-number:read",
        "https://carrier.test/cb", 0.0))
    assert token is not None
    return token


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_published_contract_with_a_token(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {fresh_token()}"})


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_published_contract_without_a_token(case: schemathesis.Case) -> None:
    case.call_and_validate()


def test_the_contract_run_reached_the_answers() -> None:
    """The generated calls got past validation to real answers (ledger rows for both)."""
    recorder = NV.recorder
    assert isinstance(recorder, ListRecorder)
    claims = {row.claims for row in recorder.rows}
    assert claims == {("number_verified",), ("msisdn",)}


def test_published_copy_is_current() -> None:
    ours = json.loads((ROOT / "docs" / "numberverify-openapi.json").read_text())
    assert ours == openapi_document()


def _resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _codes(document: dict[str, Any], response: dict[str, Any]) -> tuple[int, list[str]]:
    schema_ = _resolve(document, response)["content"]["application/json"]["schema"]
    detail = schema_["allOf"][1]["properties"]
    return detail["status"]["enum"][0], sorted(detail["code"]["enum"])


def test_our_document_says_what_the_published_one_says() -> None:
    published, ours = published_openapi(), openapi_document()
    assert ours["openapi"] == published["openapi"]
    assert ours["info"]["version"] == published["info"]["version"] == "2.1.0"
    assert [s["url"].split("}")[1] for s in published["servers"]] == \
        [s["url"].split("}")[1] for s in ours["servers"]] == [BASE_PATH]
    assert set(ours["paths"]) == set(published["paths"])
    for path, item in published["paths"].items():
        assert set(ours["paths"][path]) == set(item)
        for method, operation in item.items():
            mine = ours["paths"][path][method]
            assert mine["operationId"] == operation["operationId"]
            assert mine["security"] == operation["security"]
            assert mine["parameters"] == operation["parameters"]
            assert mine.get("requestBody") == operation.get("requestBody")
            assert mine["responses"]["200"] == operation["responses"]["200"]
            for status, response in operation["responses"].items():
                if status != "200":
                    assert _codes(ours, mine["responses"][status]) == \
                        _codes(published, response), (path, status)
            # Operator additions only: 429 (rate limit) and 503 (ledger or store away).
            assert set(mine["responses"]) - set(operation["responses"]) == {"429", "503"}
    assert ours["components"]["schemas"] == published["components"]["schemas"]
    assert ours["components"]["parameters"] == published["components"]["parameters"]
    assert ours["components"]["headers"] == published["components"]["headers"]
    assert ours["components"]["securitySchemes"] == published["components"]["securitySchemes"]
    codes = {code for response in ours["components"]["responses"].values()
             for code in _codes(ours, response)[1]}
    assert "NUMBER_VERIFICATION.INVALID_TOKEN_CONTEXT" not in codes


def test_schemathesis_cli_against_a_real_gateway(tmp_path: Path) -> None:
    """`st run` on the published document, every check schemathesis has, its examples and
    coverage phases (edge values, missing and wrong headers, other methods), against a real
    `linewarden serve`, each call with a token from the real code flow."""
    from lwtest import launch_serve, stop_process

    document = tmp_path / "number-verification.yaml"
    document.write_bytes(published(OPENAPI))
    carrier = f'''
state_dir = "{tmp_path}/state"
[ledger]
url = "sqlite:///{tmp_path}/state/ledger.db"
[[bindings]]
ip = "127.0.0.2"
msisdn = "{MSISDN_A}"
{POLICY_TEXT}
'''

    def write(proxy_port: int, web_port: int) -> Path:
        config = tmp_path / "linewarden.toml"
        config.write_text(carrier.replace("[ledger]", f'[proxy]\nlisten = "127.0.0.1:'
                                          f'{proxy_port}"\n[web]\nlisten = "127.0.0.1:'
                                          f'{web_port}"\n[ledger]'))
        return config

    proc, _, web_port, _ = launch_serve(tmp_path / "gw", write)
    web = f"http://127.0.0.1:{web_port}"
    try:
        done = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "st"), "run", str(document), "--url",
             web + BASE_PATH, "--checks", "all", "--phases", "examples,coverage",
             "--workers", "1", "--seed", "20261205"],
            capture_output=True, text=True, timeout=240, check=False,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "st_codeflow", "NV_WEB": web,
                 "PYTHONPATH": str(Path(__file__).parent), "NO_COLOR": "1"})
    finally:
        stop_process(proc)
    summary = done.stdout[-1500:]
    assert done.returncode == 0, summary
    assert "No issues found" in summary, summary
    generated = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert generated is not None and int(generated.group(1)) >= 40, summary
    assert generated.group(1) == generated.group(2), summary
