"""The HTTP side: OAuth 2.0 / OpenID Connect endpoints and the Number Verification API.

    GET  /oauth/authorize                     OIDC code flow; the subscriber is the binding
                                              of the client address (prompt=none implied)
    POST /oauth/token                         code -> single-use Bearer token (<= 300 s)
                                              and an id_token (sub: pairwise pseudonym)
    GET  /.well-known/openid-configuration    OIDC Discovery 1.0 metadata
    GET  /.well-known/oauth-authorization-server   RFC 8414 metadata (the same document)
    POST /number-verification/v2/verify       CAMARA Number Verification r3.2 (API 2.1.0)
    GET  /number-verification/v2/device-phone-number
    GET  /number-verification/v2/openapi.json this server's OpenAPI document
         /number-verification/v0/...          deprecated alias of v2 (same behaviour)

Every answer under /number-verification is JSON; errors are CAMARA Commonalities
`{"status", "code", "message"}`, 404 and 405 included. Every answer about a subscriber is a
disclosure: it is recorded in the ledger first, and withheld (503) when the ledger does not
take it (no ledger, no disclosure). Grant store calls block (Redis), so they and authlib
run in a worker thread, never on the event loop the data plane shares.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from ..bindings import Binding, BindingStore
from ..claims import PSEUDONYM_EPOCH, Secrets, pseudonym, subscriber_key
from ..decide import DisclosureRecord
from ..ledger import Recorder
from ..policy.model import NV_READ, NV_VERIFY, OAUTH_SCOPES, Partner, Policy
from ..web.jwks import JWKS_PATH
from .authserver import (
    KEY_METHOD,
    OPENID,
    SECRET_METHODS,
    NetworkAuthorizationServer,
    StarletteRequest,
    Subscriber,
)
from .grants import Grant, GrantStore, GrantStoreError, MemoryGrants
from .openapi import API_ROOT, BASE_PATH, DEPRECATED_BASE_PATH, openapi_document
from .optout import OptOuts

# Request bodies here are a few hundred bytes (a form with a code and a client assertion,
# or one phone number); 16 KiB is generous and keeps a flood from costing memory.
MAX_BODY = 16 * 1024
# CAMARA phone numbers: E.164 with '+' (ITU-T E.164: at most 15 digits).
PHONE = re.compile(r"^\+[1-9][0-9]{4,14}$")
SHA256_HEX = re.compile(r"^[a-fA-F0-9]{64}$")
# CAMARA Commonalities r3.4 XCorrelator pattern (the published one, character for character).
CORRELATOR = re.compile(r"^[a-zA-Z0-9-_:;.\/<>{}]{0,256}$")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Per-client rate limit on API calls: a fixed window (Redis INCR + expiry, the same count on
# every instance). The default is generous: 6000 calls a minute (100/s) per partner, far
# above what one partner's sign-ups make; it bounds a runaway client, not normal use.
RATE_WINDOW = 60.0
DEFAULT_RATE_LIMIT = 6000
# Alias of an older base path: RFC 9745 `Deprecation` (the date v2 replaced it) and
# RFC 8594-style successor link.
DEPRECATED_SINCE = "@1796428800"  # 2026-12-05T00:00:00Z


@dataclass
class NumberVerification:
    """Everything the endpoints need, read live where it can change (policy, switch)."""

    policy: Callable[[], Policy]
    store: BindingStore
    recorder: Recorder
    secrets: Secrets  # pseudonym keys (the ID token's sub) and the signer (its signature)
    switch_tripped: Callable[[], bool] = lambda: False
    optouts: OptOuts | None = None
    clock: Callable[[], float] = time.time
    grants: GrantStore | None = None  # None: MemoryGrants on `clock`
    issuer: str = ""  # "" : the origin each request came to (scheme://host:port)
    rate_limit: int = DEFAULT_RATE_LIMIT  # API calls per RATE_WINDOW per client; 0: none
    server: NetworkAuthorizationServer = field(init=False)

    def __post_init__(self) -> None:
        if self.grants is None:
            self.grants = MemoryGrants(clock=self.clock)
        if self.secrets.signer is None:
            raise ValueError("Number Verification needs a signer for its ID tokens")
        self.server = NetworkAuthorizationServer(self.policy, self.grants,
                                                 self.secrets.signer, self.clock)

    @property
    def ledger_key(self) -> bytes:
        return self.secrets.ledger_key

    @property
    def grant_store(self) -> GrantStore:
        assert self.grants is not None
        return self.grants

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

    def subscriber(self, binding: Binding, client_id: str) -> Subscriber:
        """The resource owner, with the pairwise pseudonym the client's partner knows
        them by (the same value as the partner's `pseudonym` header claim)."""
        partner = next((p for p in self.policy().partners
                        if p.oauth is not None and p.oauth.client_id == client_id), None)
        subject = "" if partner is None else pseudonym(
            self.secrets, partner.id, binding.msisdn,
            binding.attributes.get(PSEUDONYM_EPOCH, ""))
        return Subscriber(binding.msisdn, subject)

    def issuer_for(self, request: Request) -> str:
        return self.issuer or f"{request.url.scheme}://{request.url.netloc}"


# ---------------------------------------------------------------- OAuth / OIDC

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


def provider_metadata(nv: NumberVerification, issuer: str) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §3 (and RFC 8414: the same names)."""
    signer = nv.secrets.signer
    algorithms = sorted({k.algorithm for k in signer.ring.keys}) if signer else []
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/oauth/authorize",
        "token_endpoint": issuer + "/oauth/token",
        "jwks_uri": issuer + JWKS_PATH,
        "scopes_supported": [OPENID, *OAUTH_SCOPES],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": algorithms or ["ES256"],
        "token_endpoint_auth_methods_supported": [*SECRET_METHODS, KEY_METHOD],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "PS256",
                                                             "EdDSA"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce"],
        "prompt_values_supported": ["none"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }


def oauth_routes(nv: NumberVerification) -> list[BaseRoute]:
    async def authorize(request: Request) -> Response:
        try:
            oreq = StarletteRequest("GET", str(request.url), request.headers,
                                    request.query_params.multi_items(), [])
        except Exception:  # authlib's InsecureTransportError: plain http off loopback
            return _oauth_error(400, "invalid_request", "the authorization server must be "
                                "reached over https")
        binding = await nv.binding(request)
        client_id = request.query_params.get("client_id", "")
        subscriber = nv.subscriber(binding, client_id) if binding is not None else None

        def refused(partner: Partner) -> bool:
            return binding is not None and nv.refused(binding, partner)

        return _reply(*await run_in_threadpool(nv.server.authorize, oreq, subscriber,
                                               refused))

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
        issuer = nv.issuer_for(request)
        audiences = list(dict.fromkeys([token_url, issuer + "/oauth/token", issuer]))
        return _reply(*await run_in_threadpool(nv.server.token, oreq, audiences, issuer))

    async def metadata(request: Request) -> Response:
        return JSONResponse(provider_metadata(nv, nv.issuer_for(request)),
                            headers={"Access-Control-Allow-Origin": "*"})

    return [Route("/oauth/authorize", authorize, methods=["GET"]),
            Route("/oauth/token", token, methods=["POST"]),
            Route("/.well-known/openid-configuration", metadata, methods=["GET"]),
            Route("/.well-known/oauth-authorization-server", metadata, methods=["GET"])]


# ---------------------------------------------------------------- the CAMARA API

class _Refusal(Exception):
    """A Commonalities error answer: the status travels with the error."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


# Commonalities r3.4 (CAMARA-API-Design-Guide §3.1) codes and their standard messages.
INVALID_ARGUMENT = "INVALID_ARGUMENT"
UNAUTHENTICATED = (401, "UNAUTHENTICATED", "Request not authenticated due to missing, "
                   "invalid, or expired credentials. A new authentication is required.")
NOT_FOUND = (404, "NOT_FOUND", "The specified resource is not found.")
METHOD_NOT_ALLOWED = (405, "METHOD_NOT_ALLOWED",
                      "The requested method is not allowed/supported on the target resource.")
TOO_MANY_REQUESTS = (429, "TOO_MANY_REQUESTS", "Rate limit reached.")
INTERNAL = (500, "INTERNAL", "Unknown server error. Typically a server bug.")
UNAVAILABLE = (503, "UNAVAILABLE", "Service Unavailable.")


def _error_response(exc: _Refusal, correlator: str | None) -> Response:
    headers = {**NO_STORE, **exc.headers}
    if correlator:  # Commonalities: a non-empty x-correlator is echoed, errors included
        headers["x-correlator"] = correlator
    return JSONResponse({"status": exc.status, "code": exc.code, "message": exc.message},
                        status_code=exc.status, headers=headers)


def _valid_correlator(request: Request) -> str | None:
    value = request.headers.get("x-correlator")
    return value if value is not None and CORRELATOR.fullmatch(value) else None


def _check_correlator(request: Request) -> None:
    value = request.headers.get("x-correlator")
    if value is not None and not CORRELATOR.fullmatch(value):
        # Commonalities r3.4 §5.8.5: "error 400 - INVALID_ARGUMENT MUST be returned".
        raise _Refusal(400, INVALID_ARGUMENT, "x-correlator does not match its pattern")


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Refusal(*UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def _phone_claim(raw: bytes) -> tuple[str, str]:
    """("plain", "+44...") or ("hashed", lower-case hex): exactly one of the two keys,
    nothing else (the feature file's 400.3: an unknown property is an invalid argument)."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise _Refusal(400, INVALID_ARGUMENT, "The request body is not JSON.") from None
    if not isinstance(body, dict) or len(body) != 1:
        raise _Refusal(400, INVALID_ARGUMENT,
                       "Send exactly one of phoneNumber and hashedPhoneNumber.")
    [(key, value)] = body.items()
    if key == "phoneNumber" and isinstance(value, str) and PHONE.fullmatch(value):
        return "plain", value
    if key == "hashedPhoneNumber" and isinstance(value, str) \
            and SHA256_HEX.fullmatch(value):
        return "hashed", value.lower()
    if key in ("phoneNumber", "hashedPhoneNumber"):
        raise _Refusal(400, INVALID_ARGUMENT, f"{key} is not in the required format "
                       "(E.164 with '+', or the SHA-256 hex of it).")
    raise _Refusal(400, INVALID_ARGUMENT,
                   "Send exactly one of phoneNumber and hashedPhoneNumber.")


def matches(kind: str, value: str, msisdn: str) -> bool:
    """CAMARA since 1.0.0: the hash is SHA-256 of the E.164 string *with* its '+'. Only
    that form: a partner hashing without '+' must get the false every conforming operator
    gives it, not a true here."""
    e164 = "+" + msisdn
    if kind == "plain":
        return hmac.compare_digest(value, e164)
    return hmac.compare_digest(value, hashlib.sha256(e164.encode()).hexdigest())


Endpoint = Callable[[Request], Awaitable[Response]]


def api_routes(nv: NumberVerification) -> list[BaseRoute]:
    """The API under /number-verification, as one mounted app so that everything below
    that prefix (unknown paths and methods too) answers Commonalities JSON."""

    async def take(request: Request) -> Grant:
        """The token's grant. Taken at first presentation: one API call per token,
        whatever that call's outcome (CAMARA: single use)."""
        token = _bearer(request)
        try:
            grant = await run_in_threadpool(nv.grant_store.redeem_token, token)
        except GrantStoreError:
            raise _Refusal(*UNAVAILABLE) from None
        if grant is None:
            raise _Refusal(*UNAUTHENTICATED,
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return grant

    async def admit(grant: Grant) -> None:
        """The partner's per-client rate limit (429 TOO_MANY_REQUESTS)."""
        if nv.rate_limit <= 0:
            return
        try:
            count = await run_in_threadpool(nv.grant_store.count_call, grant.client_id,
                                            RATE_WINDOW)
        except GrantStoreError:
            raise _Refusal(*UNAVAILABLE) from None
        if count > nv.rate_limit:
            retry = int(RATE_WINDOW - nv.clock() % RATE_WINDOW) + 1
            raise _Refusal(*TOO_MANY_REQUESTS, headers={"Retry-After": str(retry)})

    def permitted(grant: Grant, scope: str) -> Partner:
        partner = nv.policy().get(grant.partner_id)
        if partner is None or partner.oauth is None or not partner.active(nv.clock()) or \
                partner.oauth.client_id != grant.client_id:
            raise _Refusal(403, "PERMISSION_DENIED", "The client is no longer registered.")
        if scope not in grant.scopes or scope not in partner.oauth.scopes:
            raise _Refusal(403, "PERMISSION_DENIED", "Client does not have sufficient "
                           f"permissions to perform this action (scope '{scope}').")
        if nv.switch_tripped() or (nv.optouts is not None
                                   and nv.optouts.opted_out(grant.msisdn, partner.id)):
            raise _Refusal(403, "PERMISSION_DENIED",
                           "The subscriber does not share this with the client.")
        return partner

    async def disclose(grant: Grant, partner: Partner, claim: str) -> None:
        policy = nv.policy()
        record = DisclosureRecord(
            time=nv.clock(), partner_id=partner.id, purpose=partner.purpose,
            host=urlsplit(grant.redirect_uri).hostname or grant.client_id, claims=(claim,),
            policy_version=policy.version,
            subscriber_key=subscriber_key(nv.ledger_key, grant.msisdn))
        if not await nv.recorder.record(record):
            raise _Refusal(*UNAVAILABLE)

    def answer(body: dict[str, Any], request: Request) -> Response:
        headers = dict(NO_STORE)
        correlator = _valid_correlator(request)
        if correlator:
            headers["x-correlator"] = correlator
        return JSONResponse(body, headers=headers)

    async def verify(request: Request) -> Response:
        try:
            grant = await take(request)
            _check_correlator(request)
            await admit(grant)
            partner = permitted(grant, NV_VERIFY)
            raw = await _body(request)
            if raw is None:
                raise _Refusal(400, INVALID_ARGUMENT, "The request body is too large.")
            kind, value = _phone_claim(raw)
            await disclose(grant, partner, "number_verified")
        except _Refusal as exc:
            return _error_response(exc, _valid_correlator(request))
        return answer({"devicePhoneNumberVerified": matches(kind, value, grant.msisdn)},
                      request)

    async def device_phone_number(request: Request) -> Response:
        if request.method != "GET":  # HEAD: would use the token up and record a
            # disclosure whose answer is never sent
            raise HTTPException(405, headers={"Allow": "GET"})
        try:
            grant = await take(request)
            _check_correlator(request)
            await admit(grant)
            partner = permitted(grant, NV_READ)
            await disclose(grant, partner, "msisdn")
        except _Refusal as exc:
            return _error_response(exc, _valid_correlator(request))
        return answer({"devicePhoneNumber": "+" + grant.msisdn}, request)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(
            api_root=f"{request.url.scheme}://{request.url.netloc}",
            discovery=nv.issuer_for(request) + "/.well-known/openid-configuration"))

    def deprecated(endpoint: Endpoint) -> Endpoint:
        async def alias(request: Request) -> Response:
            response = await endpoint(request)
            response.headers["Deprecation"] = DEPRECATED_SINCE
            response.headers["Link"] = f'<{BASE_PATH}>; rel="successor-version"'
            return response
        return alias

    def under(base: str) -> str:
        return base.removeprefix(API_ROOT)

    routes: list[BaseRoute] = []
    for base, wrap in ((BASE_PATH, None), (DEPRECATED_BASE_PATH, deprecated)):
        for path, endpoint, method in (("/verify", verify, "POST"),
                                       ("/device-phone-number", device_phone_number, "GET"),
                                       ("/openapi.json", openapi, "GET")):
            routes.append(Route(under(base) + path, wrap(endpoint) if wrap else endpoint,
                                methods=[method]))
    return [Mount(API_ROOT, app=Starlette(routes=routes, exception_handlers={
        HTTPException: _http_error, Exception: _internal_error}))]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 (no such path) and 405 (no such method), as Commonalities bodies."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        refusal = _Refusal(*METHOD_NOT_ALLOWED, headers=dict(exc.headers or {}))
    elif exc.status_code == 404:
        refusal = _Refusal(*NOT_FOUND)
    else:
        refusal = _Refusal(exc.status_code, INVALID_ARGUMENT, str(exc.detail))
    return _error_response(refusal, _valid_correlator(request))


async def _internal_error(request: Request, exc: Exception) -> Response:
    return _error_response(_Refusal(*INTERNAL), _valid_correlator(request))
