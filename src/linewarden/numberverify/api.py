"""The HTTP side: /oauth/authorize, /oauth/token, and the Number Verification API.

    GET  /oauth/authorize                     code flow; the subscriber is the binding of
                                              the client address (prompt=none supported)
    POST /oauth/token                         code -> single-use Bearer token, <= 300 s
    POST /number-verification/v0/verify       {"phoneNumber"} or {"hashedPhoneNumber"}
    GET  /number-verification/v0/device-phone-number
    GET  /number-verification/v0/openapi.json
    GET  /.well-known/oauth-authorization-server   RFC 8414 metadata

Every answer about a subscriber is a disclosure: it is recorded in the ledger first, and
withheld (503) when the ledger does not take it (PRODUCT.md invariant 4).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..bindings import Binding, BindingStore
from ..claims import subscriber_key
from ..decide import DisclosureRecord
from ..ledger import Recorder
from ..policy import NV_READ, NV_VERIFY, OAUTH_SCOPES, Partner, Policy
from .authserver import (
    KEY_METHOD,
    OPENID,
    SECRET_METHODS,
    NetworkAuthorizationServer,
    StarletteRequest,
    Subscriber,
)
from .grants import Grant, GrantStore
from .openapi import BASE_PATH, openapi_document
from .optout import OptOuts

# Request bodies here are a few hundred bytes (a form with a code and a client assertion,
# or one phone number); 16 KiB is generous and keeps a flood from costing memory.
MAX_BODY = 16 * 1024
# CAMARA phone numbers: E.164 with '+' (ITU-T E.164: at most 15 digits).
PHONE = re.compile(r"^\+[1-9][0-9]{4,14}$")
SHA256_HEX = re.compile(r"^[a-fA-F0-9]{64}$")
# CAMARA Commonalities x-correlator pattern.
CORRELATOR = re.compile(r"^[a-zA-Z0-9\-_:;./<>{}]{0,256}$")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class NumberVerification:
    """Everything the endpoints need, read live where it can change (policy, switch)."""

    policy: Callable[[], Policy]
    store: BindingStore
    recorder: Recorder
    ledger_key: bytes
    switch_tripped: Callable[[], bool] = lambda: False
    optouts: OptOuts | None = None
    clock: Callable[[], float] = time.time
    grants: GrantStore = field(default_factory=GrantStore)
    server: NetworkAuthorizationServer = field(init=False)

    def __post_init__(self) -> None:
        self.grants.clock = self.clock
        self.server = NetworkAuthorizationServer(self.policy, self.grants, self.clock)

    async def binding(self, request: Request) -> Binding | None:
        """The subscriber behind this request's client address, if bound and live.

        The address is the TCP peer's: a forwarded-for header is never trusted here, since
        anyone can write one. Put nothing that rewrites source addresses in front."""
        ip = request.client.host if request.client else ""
        found = self.store.get(ip) if self.store.local else await self.store.lookup(ip)
        return found if found is not None and found.live(self.clock()) else None

    def refused(self, binding: Binding, partner: Partner) -> bool:
        return self.switch_tripped() or binding.opted_out(partner.id) or (
            self.optouts is not None and self.optouts.opted_out(binding.msisdn, partner.id))


# ---------------------------------------------------------------- OAuth

def _reply(status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
    content = json.dumps(body) if isinstance(body, dict) else (body or "")
    merged = {**dict(headers), **NO_STORE, "Referrer-Policy": "no-referrer"}
    return Response(content, status_code=status, headers=merged)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description},
                        status_code=status, headers=NO_STORE)


async def _form(request: Request) -> list[tuple[str, str]] | Response:
    if request.headers.get("content-type", "").split(";")[0].strip() != \
            "application/x-www-form-urlencoded":
        return _oauth_error(400, "invalid_request",
                            "send the parameters as application/x-www-form-urlencoded")
    raw = await _body(request)
    if raw is None:
        return _oauth_error(413, "invalid_request", "request body too large")
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return _oauth_error(400, "invalid_request", "the body is not a valid form")


async def _body(request: Request) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def oauth_routes(nv: NumberVerification) -> list[BaseRoute]:
    async def authorize(request: Request) -> Response:
        try:
            oreq = StarletteRequest("GET", str(request.url), request.headers,
                                    request.query_params.multi_items(), [])
        except Exception:  # authlib's InsecureTransportError: plain http off loopback
            return _oauth_error(400, "invalid_request", "the authorization server must be "
                                "reached over https")
        binding = await nv.binding(request)
        subscriber = Subscriber(binding.msisdn) if binding is not None else None
        return _reply(*nv.server.authorize(
            oreq, subscriber, lambda p: binding is not None and nv.refused(binding, p)))

    async def token(request: Request) -> Response:
        form = await _form(request)
        if isinstance(form, Response):
            return form
        try:
            oreq = StarletteRequest("POST", str(request.url), request.headers, [], form)
        except Exception:
            return _oauth_error(400, "invalid_request", "the authorization server must be "
                                "reached over https")
        token_url = str(request.url.replace(query=""))
        return _reply(*nv.server.token(oreq, [token_url, _origin(request)]))

    async def metadata(request: Request) -> Response:
        base = _origin(request)
        return JSONResponse({
            "issuer": base,
            "authorization_endpoint": base + "/oauth/authorize",
            "token_endpoint": base + "/oauth/token",
            "scopes_supported": [OPENID, *OAUTH_SCOPES],
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "token_endpoint_auth_methods_supported": [*SECRET_METHODS, KEY_METHOD],
            "prompt_values_supported": ["none"],
        })

    return [Route("/oauth/authorize", authorize, methods=["GET"]),
            Route("/oauth/token", token, methods=["POST"]),
            Route("/.well-known/oauth-authorization-server", metadata, methods=["GET"])]


# ---------------------------------------------------------------- the CAMARA API

class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _camara_error(exc: _Refusal, correlator: str | None) -> Response:
    headers = dict(NO_STORE)
    if correlator:
        headers["x-correlator"] = correlator
    if exc.status == 401:  # RFC 6750 §3
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return JSONResponse({"status": exc.status, "code": exc.code, "message": exc.message},
                        status_code=exc.status, headers=headers)


UNAUTHENTICATED = (401, "UNAUTHENTICATED",
                   "Request not authenticated due to missing, invalid, or expired credentials")


def _correlator(request: Request) -> str | None:
    value = request.headers.get("x-correlator")
    if value is not None and not CORRELATOR.fullmatch(value):
        raise _Refusal(400, "INVALID_ARGUMENT", "x-correlator does not match its pattern")
    return value


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Refusal(*UNAUTHENTICATED)
    return token.strip()


def _phone_claim(body: Any) -> tuple[str, str]:
    """("plain", "+44...") or ("hashed", hex): exactly one of the two keys, nothing else."""
    if not isinstance(body, dict) or len(body) != 1:
        raise _Refusal(400, "INVALID_ARGUMENT",
                       "send exactly one of phoneNumber and hashedPhoneNumber")
    [(key, value)] = body.items()
    if key == "phoneNumber" and isinstance(value, str) and PHONE.fullmatch(value):
        return "plain", value
    if key == "hashedPhoneNumber" and isinstance(value, str) \
            and SHA256_HEX.fullmatch(value):
        return "hashed", value.lower()
    if key in ("phoneNumber", "hashedPhoneNumber"):
        raise _Refusal(400, "INVALID_ARGUMENT", f"{key} is not in the required format "
                       "(E.164 with '+', or SHA-256 hex of it)")
    raise _Refusal(400, "INVALID_ARGUMENT",
                   "send exactly one of phoneNumber and hashedPhoneNumber")


def matches(kind: str, value: str, msisdn: str) -> bool:
    """The hash is of the E.164 string with '+'; CAMARA allows it without, so both."""
    if kind == "plain":
        return hmac.compare_digest(value, "+" + msisdn)
    return any(hmac.compare_digest(value, hashlib.sha256(form.encode()).hexdigest())
               for form in ("+" + msisdn, msisdn))


def api_routes(nv: NumberVerification) -> list[BaseRoute]:
    def use(token: str, scope: str) -> tuple[Grant, Partner]:
        grant = nv.grants.redeem_token(token)  # single use, whatever happens next
        if grant is None:
            raise _Refusal(*UNAUTHENTICATED)
        partner = nv.policy().get(grant.partner_id)
        live = partner is not None and partner.active(nv.clock()) and \
            partner.oauth is not None and partner.oauth.client_id == grant.client_id
        if not live or partner is None or partner.oauth is None:
            raise _Refusal(403, "PERMISSION_DENIED", "the client is no longer registered")
        if scope not in grant.scopes or scope not in partner.oauth.scopes:
            raise _Refusal(403, "PERMISSION_DENIED",
                           f"the access token does not carry the scope '{scope}'")
        if nv.switch_tripped() or (nv.optouts is not None
                                   and nv.optouts.opted_out(grant.msisdn, partner.id)):
            raise _Refusal(403, "PERMISSION_DENIED",
                           "the subscriber does not share this with the client")
        return grant, partner

    async def disclose(grant: Grant, partner: Partner, claim: str) -> None:
        policy = nv.policy()
        record = DisclosureRecord(
            time=nv.clock(), partner_id=partner.id, purpose=partner.purpose,
            host=urlsplit(grant.redirect_uri).hostname or grant.client_id, claims=(claim,),
            policy_version=policy.version,
            subscriber_key=subscriber_key(nv.ledger_key, grant.msisdn))
        if not await nv.recorder.record(record):
            raise _Refusal(503, "UNAVAILABLE", "Service unavailable, try again later")

    def answer(body: dict[str, Any], correlator: str | None) -> Response:
        headers = dict(NO_STORE)
        if correlator:
            headers["x-correlator"] = correlator
        return JSONResponse(body, headers=headers)

    async def verify(request: Request) -> Response:
        correlator = None
        try:
            correlator = _correlator(request)
            token = _bearer(request)
            raw = await _body(request)
            if raw is None:
                raise _Refusal(400, "INVALID_ARGUMENT", "request body too large")
            try:
                body = json.loads(raw)
            except ValueError:
                raise _Refusal(400, "INVALID_ARGUMENT", "the body is not JSON") from None
            kind, value = _phone_claim(body)
            grant, partner = use(token, NV_VERIFY)
            await disclose(grant, partner, "number_verified")
        except _Refusal as exc:
            return _camara_error(exc, correlator)
        return answer({"devicePhoneNumberVerified": matches(kind, value, grant.msisdn)},
                      correlator)

    async def device_phone_number(request: Request) -> Response:
        correlator = None
        try:
            correlator = _correlator(request)
            grant, partner = use(_bearer(request), NV_READ)
            await disclose(grant, partner, "msisdn")
        except _Refusal as exc:
            return _camara_error(exc, correlator)
        return answer({"devicePhoneNumber": "+" + grant.msisdn}, correlator)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    return [Route(f"{BASE_PATH}/verify", verify, methods=["POST"]),
            Route(f"{BASE_PATH}/device-phone-number", device_phone_number, methods=["GET"]),
            Route(f"{BASE_PATH}/openapi.json", openapi, methods=["GET"])]
