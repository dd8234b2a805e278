"""The `assertion` claim: a short-lived compact JWS the partner can verify offline.

Pure: no clock, no randomness, no files. The caller passes `now` and a `nonce` (the `jti`),
and the `Signer` holds keys already loaded (`keys.py` reads and rotates them on disk).
ES256 signatures use RFC 6979 deterministic nonces, so one (payload, key) gives one token:
the core stays reproducible, and a weak RNG can never leak the private key (the PS3 ECDSA
failure). Ed25519 (EdDSA) is deterministic by design.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

Algorithm = Literal["ES256", "EdDSA"]
ALGORITHMS: tuple[Algorithm, ...] = ("ES256", "EdDSA")
DEFAULT_ALGORITHM: Algorithm = "ES256"

# CAMARA Number Verification caps its single-use tokens at 300 s; so do we. The default is
# shorter: the partner verifies within the same request, so a minute covers clock skew.
MAX_TTL = 300
DEFAULT_TTL = 60

# RFC 8725 §3.11 explicit typing: a token minted for one purpose cannot pass for another JWT.
TOKEN_TYPE = "linewarden-assertion+jwt"

# The jti is the nonce the data plane draws per request: 128 bits makes a collision (and so a
# false "replayed") negligible across every token a partner will ever see.
MIN_NONCE_BYTES = 16

PrivateKey = ec.EllipticCurvePrivateKey | Ed25519PrivateKey


_ES256 = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_P256_BYTES = 32


class _DeterministicES256(ECAlgorithm):
    """PyJWT's ES256 with RFC 6979 nonces (cryptography does the signing). The DER → raw
    r||s conversion (RFC 7518 §3.4) uses cryptography's C decoder: PyJWT's pure-Python one
    cost a third as much as the signature itself."""

    def __init__(self) -> None:
        super().__init__(ECAlgorithm.SHA256)

    def sign(self, msg: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
        r, s = decode_dss_signature(key.sign(msg, _ES256))
        return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")


# PyJWT's algorithm objects sign (through cryptography); this module only joins the three
# base64url parts (RFC 7515 §7.1) with the protected header encoded once per key. Going
# through `PyJWS.encode` re-encodes that header and re-checks the key on every call: more
# than the signature itself costs (bench/claims.py). Partners verify with PyJWT's `decode`.
_SIGNERS: dict[str, ECAlgorithm | OKPAlgorithm] = {"ES256": _DeterministicES256(),
                                                    "EdDSA": OKPAlgorithm()}


@dataclass(frozen=True)
class SigningKey:
    """One key of the key ring. `private` is None once retired: only its public half is
    kept, published until every assertion it signed has expired."""

    kid: str
    algorithm: Algorithm
    public_jwk: Mapping[str, str]  # with kid, alg and use, as the JWKS publishes it
    created: float
    retired: float | None = None
    private: PrivateKey | None = None

    def published_until(self) -> float | None:
        """None while active; afterwards the last moment a token it signed can be valid."""
        return None if self.retired is None else self.retired + RETIRED_KEY_RETENTION


# A retired key stays in the JWKS for the longest lifetime a token can have, plus the time a
# running gateway may take to notice the rotation (keys.KEY_POLL_INTERVAL, 1 s) and clock
# skew between gateway and partner (the kit's default leeway, 30 s): 300 + 60 s.
RETIRED_KEY_RETENTION = MAX_TTL + 60.0


@dataclass(frozen=True)
class KeyRing:
    """An immutable snapshot of the key directory: newest first."""

    keys: tuple[SigningKey, ...] = ()

    @property
    def active(self) -> SigningKey | None:
        return next((k for k in self.keys if k.retired is None and k.private is not None), None)

    def published(self, now: float) -> list[SigningKey]:
        return [k for k in self.keys
                if k.retired is None or now < (k.published_until() or 0.0)]

    def jwks(self, now: float) -> dict[str, list[dict[str, str]]]:
        return {"keys": [dict(k.public_jwk) for k in self.published(now)]}


class Signer:
    """Issuer, lifetime and the current key ring.

    The ring is one reference the adapter swaps when `keys rotate` changes the directory
    (like `Rules` on a policy reload): a signature uses the whole old ring or the new one."""

    def __init__(self, issuer: str, ring: KeyRing, ttl: int = DEFAULT_TTL) -> None:
        if not 1 <= ttl <= MAX_TTL:
            raise ValueError(f"assertion ttl must be 1..{MAX_TTL} seconds, not {ttl}")
        self.issuer = issuer
        self.ttl = ttl
        self.ring = ring
        self._headers: dict[str, bytes] = {}  # kid -> encoded protected header (a memo)

    def use(self, ring: KeyRing) -> None:
        self.ring = ring

    def sign(self, payload: Mapping[str, Any]) -> str | None:
        """The compact JWS, or None when there is no active key (fail closed)."""
        key = self.ring.active
        if key is None or key.private is None:
            return None
        header = self._headers.get(key.kid)
        if header is None:
            header = _b64(json.dumps({"alg": key.algorithm, "kid": key.kid, "typ": TOKEN_TYPE},
                                     separators=(",", ":")).encode()).encode()
            self._headers[key.kid] = header
        signing_input = header + b"." + \
            _b64(json.dumps(payload, separators=(",", ":")).encode()).encode()
        signature = _SIGNERS[key.algorithm].sign(signing_input, key.private)  # type: ignore[arg-type]
        return (signing_input + b"." + _b64(signature).encode()).decode("ascii")


def assertion_payload(*, issuer: str, audience: str, subject: str, now: float, ttl: int,
                      nonce: bytes, extra: Mapping[str, Any]) -> dict[str, Any] | None:
    """The claims set (RFC 7519 §4.1 names), or None when the nonce is too short to be a
    unique `jti`: better no assertion than one a replay check would confuse."""
    if len(nonce) < MIN_NONCE_BYTES:
        return None
    iat = int(now)
    return {"iss": issuer, "aud": audience, "sub": subject, "iat": iat,
            "exp": iat + min(ttl, MAX_TTL), "jti": _b64(nonce), **extra}


def public_jwk(private: PrivateKey, algorithm: Algorithm) -> dict[str, str]:
    """The public JWK with kid = its RFC 7638 thumbprint (so a kid names exactly one key)."""
    if algorithm == "ES256":
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        raw = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
        required = {k: raw[k] for k in ("crv", "kty", "x", "y")}
    else:
        assert isinstance(private, Ed25519PrivateKey)
        raw = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
        required = {k: raw[k] for k in ("crv", "kty", "x")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode()
    kid = _b64(hashlib.sha256(canonical).digest())
    return {**required, "kid": kid, "alg": algorithm, "use": "sig"}


def new_private_key(algorithm: Algorithm) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return Ed25519PrivateKey.generate()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class NoncePool:
    """Fresh `jti` bytes for every request at one getrandom() per 256 requests: the data
    plane draws a nonce for each decision, and a syscall per request showed in profiles."""

    _BATCH = 256

    def __init__(self, size: int = MIN_NONCE_BYTES) -> None:
        self._size = size
        self._buffer = b""
        self._offset = 0

    def __call__(self) -> bytes:
        if self._offset >= len(self._buffer):
            self._buffer, self._offset = os.urandom(self._size * self._BATCH), 0
        start = self._offset
        self._offset = start + self._size
        return self._buffer[start:self._offset]
