"""`verify()`: is this header a fresh assertion the operator signed for us?

Checks, in order, each failing with its own exception (errors.py): present → a compact JWS
→ `alg` is one the operator signs with (never `none`, never HMAC) → `typ` says linewarden
assertion → `kid` names a published key of that `alg` → signature → `aud` is exactly us →
`iss` (if given) → `iat`/`exp` within the clock-skew leeway, lifetime at most 300 s → `jti`
never seen before (replay). PyJWT checks the signature, `aud` and `iss`; the times are
checked here so a caller (and a test) can pass `now`.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import jwt

from ..assertion import MAX_TTL, TOKEN_TYPE
from ..claims import CLAIMS
from .errors import (
    BadSignature,
    Expired,
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
from .jwks import SUPPORTED_ALGORITHMS, JWKSFetcher, KeySet

# The header a linewarden partner policy usually names (`X-Operator-Assertion = "assertion"`).
DEFAULT_HEADER = "X-Operator-Assertion"

# Clock skew tolerated between the gateway and the partner, both ways (the gateway's retired
# keys stay published this much longer, see linewarden.assertion.RETIRED_KEY_RETENTION).
DEFAULT_LEEWAY = 30.0

# Live jtis one process remembers: ~800 assertions/s sustained over the 300 s maximum
# lifetime, about 40 MB. Above that, pass verify() a shared store (Redis SET NX EX).
DEFAULT_REPLAY_ENTRIES = 250_000

_REQUIRED = ["iss", "aud", "sub", "iat", "exp", "jti"]

JWKSource = Mapping[str, Any] | KeySet | JWKSFetcher
_T = TypeVar("_T")


@dataclass(frozen=True)
class Claims:
    """A verified assertion. `sub` is the subscriber's pseudonym for this partner only."""

    sub: str
    aud: str
    iss: str
    iat: int
    exp: int
    jti: str
    kid: str
    age_over_18: bool | None = None
    operator: str | None = None
    msisdn: str | None = None  # only for partners the operator lets see the raw number
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # Every claim an assertion may carry (claims.CLAIMS), by name, when present with its
    # declared type; the three fields above are the same facts under their own names.
    facts: Mapping[str, Any] = field(default_factory=dict)


class ReplayGuard(Protocol):
    def first_use(self, jti: str, expires_at: float, now: float) -> bool:
        """Record `jti` until `expires_at`; False if it was already recorded."""
        ...


class ReplayCache:
    """In-memory replay guard for one process (thread-safe). A jti is remembered until the
    assertion could no longer verify anyway, then forgotten."""

    def __init__(self, max_entries: int = DEFAULT_REPLAY_ENTRIES) -> None:
        self.max_entries = max_entries
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, jti: str, expires_at: float, now: float) -> bool:
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, old = heapq.heappop(self._expiry)
                if self._seen.get(old, now + 1) <= now:
                    del self._seen[old]
            if jti in self._seen:
                return False
            if len(self._seen) >= self.max_entries:
                raise ReplayCacheFull(f"{len(self._seen)} live assertions remembered; "
                                      "use a shared replay store")
            self._seen[jti] = expires_at
            heapq.heappush(self._expiry, (expires_at, jti))
            return True


DEFAULT_REPLAY_CACHE = ReplayCache()


def verify(header_value: str | bytes | None, audience: str, jwks: JWKSource, *,
           issuer: str | None = None, replay: ReplayGuard | None = DEFAULT_REPLAY_CACHE,
           now: float | None = None, leeway: float = DEFAULT_LEEWAY,
           algorithms: Sequence[str] = SUPPORTED_ALGORITHMS) -> Claims:
    """The claims of a valid assertion for `audience`, or raise `InvalidAssertion`.

    `jwks`: the operator's JWKS (a dict), a `KeySet`, or a `JWKSFetcher`. `replay`: the
    process-wide cache by default; None turns the replay check off (only for a caller that
    checks `jti` itself)."""
    if not header_value:
        raise MissingAssertion("no assertion header")
    token = header_value.decode("ascii", "replace") if isinstance(header_value, bytes) \
        else header_value
    token = token.strip()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise MalformedAssertion(f"not a compact JWS: {exc}") from None
    alg = header.get("alg")
    if alg not in algorithms or alg not in SUPPORTED_ALGORITHMS:
        raise UnexpectedAlgorithm(f"alg {alg!r} is not accepted (expected one of "
                                  f"{', '.join(algorithms)})")
    if header.get("typ") != TOKEN_TYPE:
        raise MalformedAssertion(f"typ {header.get('typ')!r} is not {TOKEN_TYPE!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKey("the assertion names no kid")
    key = _key(jwks, kid)
    if key is None:
        raise UnknownKey(f"kid {kid!r} is not among the operator's published keys")
    if key.algorithm_name != alg:
        raise UnexpectedAlgorithm(f"alg {alg!r} does not match key {kid!r} "
                                  f"({key.algorithm_name})")
    try:
        payload = jwt.decode(
            token, key.key, algorithms=[alg], audience=audience, issuer=issuer,
            options={"require": _REQUIRED, "strict_aud": True, "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False})
    except jwt.InvalidSignatureError:
        raise BadSignature(f"signature does not verify with key {kid!r}") from None
    except jwt.InvalidAudienceError:
        raise WrongAudience(f"assertion is not for audience {audience!r}") from None
    except jwt.InvalidIssuerError:
        raise WrongIssuer(f"assertion is not from issuer {issuer!r}") from None
    except jwt.InvalidAlgorithmError as exc:
        raise UnexpectedAlgorithm(str(exc)) from None
    except jwt.PyJWTError as exc:
        raise MalformedAssertion(str(exc)) from None
    if payload.get("aud") != audience:  # strict: a list of audiences is never ours alone
        raise WrongAudience(f"assertion is not for audience {audience!r}")
    now = time.time() if now is None else now
    iat, exp, jti = payload["iat"], payload["exp"], payload["jti"]
    nbf = payload.get("nbf", iat)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp, nbf)) \
            or not isinstance(jti, str) or not isinstance(payload["sub"], str):
        raise MalformedAssertion("iat/exp/nbf must be integers, jti and sub strings")
    if exp - iat > MAX_TTL:
        raise MalformedAssertion(f"lifetime {exp - iat} s exceeds {MAX_TTL} s")
    if now >= exp + leeway:
        raise Expired(f"assertion expired {int(now - exp)} s ago")
    if iat > now + leeway or nbf > now + leeway:
        raise NotYetValid(f"assertion is valid only from {iat} (now {int(now)})")
    if replay is not None and not replay.first_use(jti, exp + leeway, now):
        raise Replayed(f"jti {jti!r} was already used")
    facts = {name: value for name, claim in CLAIMS.items() if claim.kit_type is not None
             and (value := _typed(payload, name, claim.kit_type)) is not None}
    return Claims(sub=payload["sub"], aud=payload["aud"], iss=payload["iss"], iat=iat,
                  exp=exp, jti=jti, kid=kid, age_over_18=facts.get("age_over_18"),
                  operator=facts.get("operator"), msisdn=facts.get("msisdn"),
                  payload=payload, facts=facts)


def kid_of(header_value: str | bytes | None) -> str | None:
    """The kid an assertion names (unverified), for deciding whether a fetch is due."""
    if not header_value:
        return None
    token = header_value.decode("ascii", "replace") if isinstance(header_value, bytes) \
        else header_value
    try:
        kid = jwt.get_unverified_header(token.strip()).get("kid")
    except jwt.PyJWTError:
        return None
    return kid if isinstance(kid, str) else None


def _key(jwks: JWKSource, kid: str) -> jwt.PyJWK | None:
    if isinstance(jwks, JWKSFetcher):
        return jwks.key(kid)
    if isinstance(jwks, KeySet):
        return jwks.get(kid)
    return KeySet.from_jwks(jwks).get(kid)


def _typed(payload: Mapping[str, Any], name: str, kind: type[_T]) -> _T | None:
    value = payload.get(name)
    return value if isinstance(value, kind) else None
