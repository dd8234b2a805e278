"""The OAuth 2.0 authorization server (authlib) behind /oauth/authorize and /oauth/token.

Partners are OAuth clients through their `[partners.oauth]` entry in the live policy, so a
policy reload adds, changes or removes clients at once, and an expired partner is no client.
The resource owner is found by the network, not by a password: `authorize()` takes the
subscriber's number from the binding of the request's client address (CAMARA "network-based
authentication"); the caller does that lookup and passes it in.

OpenID Connect (authlib's `OpenIDCode` extension): `openid` is required in the code flow,
and the token response carries an `id_token` signed with the gateway's key ring (the keys
`/.well-known/jwks.json` publishes) whose `sub` is the partner's pairwise pseudonym.

authlib ships no type information, so this module is the one place that touches it.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authlib.oauth2 import AuthorizationServer  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    ClientMixin,
    InvalidRequestError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant  # type: ignore[import-untyped]
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import CodeChallenge  # type: ignore[import-untyped]
from authlib.oidc.core import AuthorizationCodeMixin  # type: ignore[import-untyped]
from authlib.oidc.core.errors import LoginRequiredError  # type: ignore[import-untyped]
from authlib.oidc.core.grants import OpenIDCode  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from joserfc import jwk

from ..assertion import Signer
from ..policy.model import OAUTH_SCOPES, Partner, Policy
from .grants import Grant, GrantStore, GrantStoreError, new_token

# OIDC Core §3.1.2.1: "OpenID Connect requests MUST contain the openid scope value";
# CAMARA's profile uses the OIDC code flow, so a request without it is refused here.
OPENID = "openid"
# CAMARA ICM r3.3 "Purpose as a scope": at most one `dpv:<purpose>` value may come with
# the scopes. Accepted and kept in the grant's scope; what the ledger records is the
# purpose the partner registered in the policy.
PURPOSE_PREFIX = "dpv:"
# The ID token is read once, by the partner, right after the token response; CAMARA caps
# its tokens at 300 s and so does this one.
ID_TOKEN_TTL = 300
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
KEY_METHOD = "private_key_jwt"
# RFC 7523 §3: a client assertion's jti is remembered until it expires; assertions that claim
# to live longer than this are refused (a partner signs one per token request).
MAX_ASSERTION_LIFE = 600.0


class LoginRequired(OAuth2Error):  # type: ignore[misc]
    """OIDC Core §3.1.2.6: prompt=none and the user cannot be authenticated silently."""

    error = "login_required"


class Unavailable(OAuth2Error):  # type: ignore[misc]
    error = "temporarily_unavailable"
    status_code = 503


class OpenIDRequired(OAuth2Error):  # type: ignore[misc]
    error = "invalid_scope"
    description = "the openid scope is required (OpenID Connect authorization code flow)"


@dataclass(frozen=True)
class Subscriber:
    """The resource owner, as the network identified them. `subject` is the pairwise
    pseudonym the partner knows them by (the ID token's `sub`)."""

    msisdn: str
    subject: str = ""


class _RequestContext(threading.local):
    """What one token request needs deep inside authlib's callbacks, which take no request:
    per thread, since requests are served from a pool of worker threads."""

    audiences: list[str]
    issuer: str

    def __init__(self) -> None:
        self.audiences, self.issuer = [], ""


class OAuthClient(ClientMixin):  # type: ignore[misc]
    def __init__(self, partner: Partner) -> None:
        assert partner.oauth is not None
        self.partner, self.oauth = partner, partner.oauth
        self.client_id = partner.oauth.client_id

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # RFC 6749 §3.1.2.3: with several registered URIs the request must name one.
        uris = self.oauth.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """All requested scopes, or None (invalid_scope): never a silent subset. `openid`
        must be among them, with at least one API scope and at most one purpose."""
        requested = list(dict.fromkeys((scope or "").split()))
        if OPENID not in requested:
            raise OpenIDRequired()
        purposes = [s for s in requested if s.startswith(PURPOSE_PREFIX)]
        wanted = [s for s in requested if s != OPENID and s not in purposes]
        if len(purposes) > 1 or not wanted or any(s not in self.oauth.scopes for s in wanted):
            return None
        return " ".join(requested)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.oauth.redirect_uris  # exact match (RFC 9700 §2.1)

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.oauth.client_secret_sha256:
            return False
        given = hashlib.sha256(client_secret.encode()).hexdigest()
        return hmac.compare_digest(given, self.oauth.client_secret_sha256)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint != "token":
            return True
        return method in SECRET_METHODS if self.oauth.client_secret_sha256 else \
            method == KEY_METHOD

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"  # no refresh_token grant, ever


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._data: dict[str, str] = {}
        self._list: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in items:
            self._data.setdefault(key, value)
            self._list[key].append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._list


class StarletteRequest(OAuth2Request):  # type: ignore[misc]
    """What authlib reads of an HTTP request: parameters from the query (authorize) or the
    form body (token; RFC 6749 §4.1.3 puts them there, so the query is ignored)."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str],
                 query: Sequence[tuple[str, str]], form: Sequence[tuple[str, str]]) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = dict(query)
        self._form = dict(form)
        self.payload = _Payload(form if method == "POST" else query)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _AuthCode(AuthorizationCodeMixin):  # type: ignore[misc]
    """authlib's view of a redeemed code."""

    def __init__(self, grant: Grant, requested_redirect: str | None) -> None:
        self.grant, self._redirect = grant, requested_redirect
        self.code_challenge = grant.code_challenge or None
        self.code_challenge_method = "S256" if grant.code_challenge else None

    def get_redirect_uri(self) -> str | None:
        return self._redirect

    def get_scope(self) -> str:
        return self.grant.scope

    def get_nonce(self) -> str | None:
        return self.grant.nonce or None

    def get_auth_time(self) -> int | None:
        return self.grant.auth_time or None


class _CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, KEY_METHOD]  # noqa: RUF012 (authlib's)

    def save_authorization_code(self, code: str, request: Any) -> None:
        server: NetworkAuthorizationServer = self.server
        client: OAuthClient = request.client
        user: Subscriber = request.user
        redirect = request.payload.redirect_uri or client.get_default_redirect_uri() or ""
        data = request.payload.data
        grant = Grant(client.client_id, client.partner.id, user.msisdn, request.scope,
                      redirect, 0.0, redirect_given=bool(request.payload.redirect_uri),
                      code_challenge=data.get("code_challenge", ""), subject=user.subject,
                      nonce=data.get("nonce", ""), auth_time=int(server.now()))
        try:
            # OIDC Core §15.5.2: a nonce is accepted once per client (a replayed
            # authorization request gets no second code), on every instance alike.
            fresh = not grant.nonce or server.grants.first_use(
                f"nonce\0{client.client_id}\0{grant.nonce}", server.grants.code_ttl)
            issued = fresh and server.grants.issue_code(grant, code)
        except GrantStoreError:
            raise Unavailable(redirect_uri=redirect) from None
        if not fresh:
            raise InvalidRequestError("nonce already used", redirect_uri=redirect)
        if not issued:
            raise Unavailable(redirect_uri=redirect)

    def generate_authorization_code(self) -> str:
        return new_token()

    def query_authorization_code(self, code: str, client: OAuthClient) -> _AuthCode | None:
        # Taken (removed) on first presentation, whoever presents it and whatever then
        # fails: RFC 6749 §4.1.2 "The client MUST NOT use the authorization code more than
        # once", and a code presented by the wrong client, or that failed once, is suspect.
        store: GrantStore = self.server.grants
        try:
            grant = store.redeem_code(code)
        except GrantStoreError:
            raise Unavailable() from None
        if grant is None or grant.client_id != client.client_id:
            return None
        return _AuthCode(grant, grant.redirect_uri if grant.redirect_given else None)

    def delete_authorization_code(self, authorization_code: _AuthCode) -> None:
        pass  # already gone: query_authorization_code redeemed it

    def authenticate_user(self, authorization_code: _AuthCode) -> Grant:
        return authorization_code.grant


class _S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only: "plain" shows the verifier to whoever sees the authorization
    request, so it protects nothing (RFC 9700 §2.1.1). A code issued with a challenge is
    redeemed only with its verifier; a verifier for a code issued without one is refused."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 (authlib's)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class _OpenIDCode(OpenIDCode):  # type: ignore[misc]
    """The ID token: signed with the gateway's key ring, `sub` the pairwise pseudonym,
    `aud` the client id, `nonce` echoed, living ID_TOKEN_TTL."""

    def __init__(self, server: NetworkAuthorizationServer) -> None:
        super().__init__(require_nonce=False)  # OIDC Core: nonce is optional in code flow
        self.server = server

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        # authlib asks twice per authorize request (consent, then response), so a
        # check-and-set here would refuse every nonce: the one atomic check is made when
        # the code is saved (_CodeGrant.save_authorization_code).
        return False

    def _key(self) -> Any:
        key = self.server.signer.ring.active
        if key is None or key.private is None:
            raise Unavailable("no active signing key")
        return key

    def resolve_client_private_key(self, client: OAuthClient) -> jwk.Key:
        private = self._key().private
        if isinstance(private, Ed25519PrivateKey):
            return jwk.OKPKey.import_key(private)
        return jwk.ECKey.import_key(private)

    def get_client_algorithm(self, client: OAuthClient) -> str:
        return str(self._key().algorithm)

    def get_encode_header(self, client: OAuthClient) -> dict[str, str]:
        key = self._key()
        return {"alg": key.algorithm, "kid": key.kid}

    def get_client_claims(self, client: OAuthClient) -> dict[str, Any]:
        now = int(self.server.now())
        return {"iss": self.server.context.issuer, "aud": client.client_id, "iat": now,
                "exp": now + ID_TOKEN_TTL}

    def generate_user_info(self, user: Grant, scope: str) -> dict[str, str]:
        return {"sub": user.subject}


class _PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 §2.2 client authentication with the partner's registered public key."""

    CLIENT_AUTH_METHOD = KEY_METHOD

    def __init__(self, server: NetworkAuthorizationServer) -> None:
        super().__init__(validate_jti=True)
        self.server = server

    def get_audiences(self) -> list[str]:
        return self.server.context.audiences

    def validate_jti(self, claims: Mapping[str, Any], jti: str) -> bool:
        """Each assertion once, on any instance: its jti is remembered in the grant store
        until the assertion expires."""
        life = float(claims.get("exp", 0)) - time.time()
        if life > MAX_ASSERTION_LIFE:
            return False
        try:
            return self.server.grants.first_use(f"jti\0{claims.get('sub')}\0{jti}",
                                                max(life, 0.0) + self.leeway)
        except GrantStoreError:
            raise Unavailable() from None

    def resolve_client_public_key(self, client: OAuthClient) -> jwk.Key:
        public = load_pem_public_key(client.oauth.public_key.encode())
        if isinstance(public, RSAPublicKey):
            return jwk.import_key(client.oauth.public_key, "RSA")
        if isinstance(public, EllipticCurvePublicKey):
            return jwk.import_key(client.oauth.public_key, "EC")
        if isinstance(public, Ed25519PublicKey):
            return jwk.import_key(client.oauth.public_key, "OKP")
        raise OAuth2Error("unsupported client key type")


Reply = tuple[int, Any, list[tuple[str, str]]]


def _not_on_network(request: StarletteRequest, redirect: str | None) -> OAuth2Error:
    """No binding for the client address: login_required under prompt=none (nothing could
    be asked anyway), access_denied otherwise (RFC 6749 §4.1.2.1)."""
    why = "the device is not on this mobile network"
    if request.payload.data.get("prompt", "") == "none":
        error: OAuth2Error = LoginRequired(why, redirect_uri=redirect)
    else:
        error = OAuth2Error(why, redirect_uri=redirect)
        error.error = "access_denied"
    error.state = request.payload.state
    return error


class NetworkAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """`handle_response` returns (status, body, headers); the routes make the response."""

    def __init__(self, policy: Callable[[], Policy], grants: GrantStore, signer: Signer,
                 now: Callable[[], float] = time.time) -> None:
        super().__init__(scopes_supported=[OPENID, *OAUTH_SCOPES])
        self.policy, self.grants, self.signer, self.now = policy, grants, signer, now
        self.context = _RequestContext()  # set per token request (see token())
        # Partners authenticate (secret or key), so PKCE is optional, and enforced once used.
        self.register_grant(_CodeGrant, [_S256Only(required=False), _OpenIDCode(self)])
        self.register_token_generator("default", self._generate_token)
        self.register_client_auth_method(KEY_METHOD, _PrivateKeyJWT(self))

    def validate_requested_scope(self, scope: str | None) -> None:
        """A `dpv:` purpose is no scope of ours but may come with them (CAMARA ICM)."""
        kept = " ".join(s for s in (scope or "").split() if not s.startswith(PURPOSE_PREFIX))
        super().validate_requested_scope(kept)

    def query_client(self, client_id: str) -> OAuthClient | None:
        now = self.now()
        for partner in self.policy().partners:
            if partner.oauth is not None and partner.oauth.client_id == client_id:
                return OAuthClient(partner) if partner.active(now) else None
        return None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        pass  # issued into the grant store by _generate_token

    def _generate_token(self, grant_type: str, client: OAuthClient, user: Grant | None = None,
                        scope: str | None = None, expires_in: int | None = None,
                        include_refresh_token: bool = False) -> dict[str, Any]:
        assert user is not None
        try:
            token = self.grants.issue_token(user)
        except GrantStoreError:
            token = None
        if token is None:
            raise Unavailable()
        # No refresh_token: each verification starts from the network again.
        return {"access_token": token, "token_type": "Bearer",
                "expires_in": int(self.grants.token_ttl), "scope": user.scope}

    def create_oauth2_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Reply:
        return status, body, list(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    # ---- the two endpoints, in terms of StarletteRequest

    def authorize(self, request: StarletteRequest, subscriber: Subscriber | None,
                  refused: Callable[[Partner], bool]) -> Reply:
        """`subscriber`: from the client address's binding, None without one. `refused`:
        whether this subscriber may not be disclosed to that partner now (opt-out, kill
        switch): answered as access_denied, like a user who said no."""
        try:
            # With the subscriber as end user: prompt=none then needs no interaction.
            grant = self.get_consent_grant(request, end_user=subscriber)
        except LoginRequiredError:  # prompt=none without a binding
            client = request.client
            redirect = request.payload.redirect_uri or client.get_default_redirect_uri()
            return self.handle_error_response(  # type: ignore[no-any-return]
                request, _not_on_network(request, redirect))
        except OAuth2Error as error:
            return self.handle_error_response(request, error)  # type: ignore[no-any-return]
        client = request.client
        redirect = request.payload.redirect_uri or client.get_default_redirect_uri()
        if subscriber is None:
            return self.handle_error_response(  # type: ignore[no-any-return]
                request, _not_on_network(request, redirect))
        if refused(client.partner):
            subscriber = None  # authlib answers access_denied
        return self.create_authorization_response(  # type: ignore[no-any-return]
            request, grant_user=subscriber, grant=grant)

    def token(self, request: StarletteRequest, audiences: list[str], issuer: str) -> Reply:
        """Blocking (the grant store): call from a worker thread."""
        self.context.audiences, self.context.issuer = audiences, issuer
        try:
            return self.create_token_response(request)  # type: ignore[no-any-return]
        finally:
            self.context.audiences, self.context.issuer = [], ""
