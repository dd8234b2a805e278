"""What can be wrong with an assertion: one exception class per cause.

Each has a stable `code` (for logs and JSON answers) and the HTTP `status` the middleware
answers with: 401 when the request's assertion is bad, 503 when this side cannot check it.
"""

from __future__ import annotations


class InvalidAssertion(Exception):  # the subclass names read as the verdict
    code = "invalid_assertion"
    status = 401


class MissingAssertion(InvalidAssertion):
    code = "missing"


class MalformedAssertion(InvalidAssertion):
    """Not a compact JWS, not a linewarden assertion (`typ`), a required claim missing, or
    a lifetime longer than the operator may issue."""

    code = "malformed"


class UnexpectedAlgorithm(InvalidAssertion):
    """`alg: none`, an HMAC `alg` (the public-key-as-secret confusion, RFC 8725 §2.1), or an
    `alg` that does not match the key named by `kid`."""

    code = "unexpected_alg"


class UnknownKey(InvalidAssertion):
    code = "unknown_kid"


class BadSignature(InvalidAssertion):
    code = "bad_signature"


class WrongAudience(InvalidAssertion):
    code = "wrong_audience"


class WrongIssuer(InvalidAssertion):
    code = "wrong_issuer"


class Expired(InvalidAssertion):
    code = "expired"


class NotYetValid(InvalidAssertion):
    code = "not_yet_valid"


class Replayed(InvalidAssertion):
    code = "replayed"


class KeysUnavailable(InvalidAssertion):
    """The operator's JWKS could not be fetched and no cached copy is usable."""

    code = "keys_unavailable"
    status = 503


class ReplayCacheFull(InvalidAssertion):
    """Too many live `jti`s to remember: refuse rather than accept an unchecked replay."""

    code = "replay_cache_full"
    status = 503
