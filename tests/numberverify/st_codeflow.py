"""Schemathesis hooks (`SCHEMATHESIS_HOOKS=st_codeflow`): every generated call gets a fresh
access token from the real OpenID Connect code flow (the device on 127.0.0.2, the carrier's
secret at /oauth/token), since each token answers exactly one call. `NV_WEB` is the
gateway's web listener."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import schemathesis

CLIENT = ("carrier-client", "carrier-secret-0123456789")
REDIRECT = "https://carrier.test/cb"
SCOPES = "openid number-verification:verify number-verification:device-phone-number:read"


@schemathesis.auth(refresh_interval=None)  # never cached: one token, one call
class CodeFlow:
    def get(self, case: Any, context: Any) -> str:
        web = os.environ["NV_WEB"]
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"),
                          trust_env=False) as device:
            found = device.get(web + "/oauth/authorize", params={
                "response_type": "code", "client_id": CLIENT[0], "redirect_uri": REDIRECT,
                "scope": SCOPES, "state": "st", "prompt": "none"})
        code = parse_qs(urlsplit(found.headers["location"]).query)["code"][0]
        issued = httpx.post(web + "/oauth/token", auth=CLIENT, trust_env=False,
                            data={"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": REDIRECT})
        return str(issued.json()["access_token"])

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
