"""The OAuth 2.0 authorization server (authlib) behind /oauth/authorize and /oauth/token.

Partners are OAuth clients through their `[partners.oauth]` entry in the live policy, so a
policy reload adds, changes or removes clients at once, and an expired partner is no client.
The resource owner is found by the network, not by a password: `authorize()` takes the
subscriber's number from the binding of the request's client address (CAMARA "network-based
authentication"); the caller does that lookup and passes it in.

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
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from joserfc import jwk

from ..policy import OAUTH_SCOPES, Partner, Policy
from .grants import Grant, GrantStore

# Requested alongside the API scopes by OpenID Connect clients (CAMARA's profile); accepted
# and dropped: this server issues no ID token, only the access token.
OPENID = "openid"
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
KEY_METHOD = "private_key_jwt"
# RFC 7523 §3: a client assertion's jti is remembered until it expires; assertions that claim
# to live longer than this are refused (a partner signs one per token request).
MAX_ASSERTION_LIFE = 600.0
MAX_SEEN_JTI = 100_000


class LoginRequired(OAuth2Error):  # type: ignore[misc]
    """OIDC Core §3.1.2.6: prompt=none and the user cannot be authenticated silently."""

    error = "login_required"


class Unavailable(OAuth2Error):  # type: ignore[misc]
    error = "temporarily_unavailable"
    status_code = 503


@dataclass(frozen=True)
class Subscriber:
    """The resource owner, as the network identified them."""

    msisdn: str


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
        """All requested scopes, or None (invalid_scope): never a silent subset."""
        wanted = [s for s in (scope or "").split() if s != OPENID]
        if not wanted or any(s not in self.oauth.scopes for s in wanted):
            return None
        return " ".join(dict.fromkeys(wanted))

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


class _AuthCode:
    """authlib's view of a redeemed code."""

    def __init__(self, grant: Grant, requested_redirect: str | None) -> None:
        self.grant, self._redirect = grant, requested_redirect
        self.code_challenge = grant.code_challenge or None
        self.code_challenge_method = "S256" if grant.code_challenge else None

    def get_redirect_uri(self) -> str | None:
        return self._redirect

    def get_scope(self) -> str:
        return self.grant.scope


class _CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, KEY_METHOD]  # noqa: RUF012 (authlib's)

    def save_authorization_code(self, code: str, request: Any) -> None:
        server: NetworkAuthorizationServer = self.server
        client: OAuthClient = request.client
        user: Subscriber = request.user
        redirect = request.payload.redirect_uri or client.get_default_redirect_uri() or ""
        grant = Grant(client.client_id, client.partner.id, user.msisdn, request.scope,
                      redirect, 0.0, redirect_given=bool(request.payload.redirect_uri),
                      code_challenge=request.payload.data.get("code_challenge", ""))
        if server.grants.issue_code(grant, code) is None:
            raise Unavailable(redirect_uri=redirect)

    def query_authorization_code(self, code: str, client: OAuthClient) -> _AuthCode | None:
        # Redeemed (removed) on first presentation, even if the rest of the request then
        # fails: RFC 6749 §4.1.2 "The client MUST NOT use the authorization code more than
        # once", and a code that failed once is suspect.
        store: GrantStore = self.server.grants
        if store.peek_code(code, client.client_id) is None:
            return None
        grant = store.redeem_code(code)
        if grant is None:
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


class _PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 §2.2 client authentication with the partner's registered public key."""

    CLIENT_AUTH_METHOD = KEY_METHOD

    def __init__(self, audiences: Callable[[], list[str]]) -> None:
        super().__init__(validate_jti=True)
        self._audiences = audiences
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def get_audiences(self) -> list[str]:
        return self._audiences()

    def validate_jti(self, claims: Mapping[str, Any], jti: str) -> bool:
        now = time.time()
        exp = float(claims.get("exp", 0))
        if exp - now > MAX_ASSERTION_LIFE:
            return False
        key = f"{claims.get('sub')}\0{jti}"
        with self._lock:
            if len(self._seen) >= MAX_SEEN_JTI:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
                if len(self._seen) >= MAX_SEEN_JTI:
                    return False
            if key in self._seen and self._seen[key] > now:
                return False
            self._seen[key] = exp + self.leeway
        return True

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

    def __init__(self, policy: Callable[[], Policy], grants: GrantStore,
                 now: Callable[[], float] = time.time) -> None:
        super().__init__(scopes_supported=[OPENID, *OAUTH_SCOPES])
        self.policy, self.grants, self.now = policy, grants, now
        self.token_audiences: list[str] = []  # set per token request (see token())
        # Partners authenticate (secret or key), so PKCE is optional, and enforced once used.
        self.register_grant(_CodeGrant, [_S256Only(required=False)])
        self.register_token_generator("default", self._generate_token)
        self.register_client_auth_method(KEY_METHOD,
                                         _PrivateKeyJWT(lambda: self.token_audiences))

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
        token = self.grants.issue_token(user)
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
            grant = self.get_consent_grant(request)
        except OAuth2Error as error:
            return self.handle_error_response(request, error)  # type: ignore[no-any-return]
        client: OAuthClient = request.client
        redirect = request.payload.redirect_uri or client.get_default_redirect_uri()
        if subscriber is None:
            return self.handle_error_response(  # type: ignore[no-any-return]
                request, _not_on_network(request, redirect))
        if refused(client.partner):
            subscriber = None  # authlib answers access_denied
        return self.create_authorization_response(  # type: ignore[no-any-return]
            request, grant_user=subscriber, grant=grant)

    def token(self, request: StarletteRequest, audiences: list[str]) -> Reply:
        self.token_audiences = audiences
        try:
            return self.create_token_response(request)  # type: ignore[no-any-return]
        finally:
            self.token_audiences = []
