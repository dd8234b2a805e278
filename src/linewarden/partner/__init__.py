"""linewarden.partner: verify the operator's signed identity assertions.

For partner web sites. An operator running linewarden adds a header (by default
`X-Operator-Assertion`) holding a short-lived compact JWS: `sub` is a pseudonym for this
partner only, `aud` is the partner id, and the claims the partner's contract allows.

    from linewarden.partner import JWKSFetcher, verify
    keys = JWKSFetcher("https://gateway.operator.example/.well-known/jwks.json")
    claims = verify(request.headers.get("X-Operator-Assertion"), "my-partner-id", keys)

Or wrap the app: `AssertionMiddleware` (ASGI) and `WSGIAssertionMiddleware` reject a
missing, forged, expired or replayed assertion and hand `Claims` to the app.
"""

from .asgi import AssertionMiddleware
from .errors import (
    BadSignature,
    Expired,
    InvalidAssertion,
    KeysUnavailable,
    MalformedAssertion,
    MissingAssertion,
    NotYetValid,
    ReplayCacheFull,
    Replayed,
    UnexpectedAlgorithm,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
)
from .jwks import JWKSFetcher, KeySet
from .verify import (
    DEFAULT_HEADER,
    DEFAULT_LEEWAY,
    DEFAULT_REPLAY_CACHE,
    Claims,
    ReplayCache,
    ReplayGuard,
    kid_of,
    verify,
)
from .wsgi import WSGIAssertionMiddleware

__all__ = [
    "DEFAULT_HEADER",
    "DEFAULT_LEEWAY",
    "DEFAULT_REPLAY_CACHE",
    "AssertionMiddleware",
    "BadSignature",
    "Claims",
    "Expired",
    "InvalidAssertion",
    "JWKSFetcher",
    "KeySet",
    "KeysUnavailable",
    "MalformedAssertion",
    "MissingAssertion",
    "NotYetValid",
    "ReplayCache",
    "ReplayCacheFull",
    "ReplayGuard",
    "Replayed",
    "UnexpectedAlgorithm",
    "UnknownKey",
    "WSGIAssertionMiddleware",
    "WrongAudience",
    "WrongIssuer",
    "kid_of",
    "verify",
]
