"""Authorization codes and access tokens: what was granted, to whom, about whom, until when.

Both live in this process's memory. A code is redeemed once; an access token answers one
Number Verification call and is then gone (CAMARA: single use, at most 300 s). The
subscriber travels inside the grant as the number the binding named when the code was
issued, so a later change of the address's binding cannot redirect an answer to somebody
else's line.

Simplification: the grants are per instance. Several gateway instances behind one name need
the partner's authorize, token and API calls to reach the same instance (sticky routing by
client address); a shared store can implement the same three calls later.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# RFC 6749 §4.1.2: "A maximum authorization code lifetime of 10 minutes is RECOMMENDED".
# The code travels in one redirect the partner follows at once; 60 s is ample.
CODE_TTL = 60.0
# CAMARA Number Verification: an access token lives at most 300 s (PRODUCT.md).
TOKEN_TTL = 300.0
# Bound on outstanding grants (codes + tokens): past it, expired ones are purged and, if
# still full, new grants are refused rather than letting memory grow without limit.
MAX_GRANTS = 200_000
# 32 random bytes, URL-safe: 256 bits, like authlib's default 48-character codes.
TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code or token stands for."""

    client_id: str
    partner_id: str
    msisdn: str  # E.164 digits without '+', from the binding at authorization time
    scope: str
    redirect_uri: str
    expires_at: float
    redirect_given: bool = False  # the authorize request named it: the token request must too
    code_challenge: str = ""  # PKCE (RFC 7636, S256 only): the token request must prove it

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())


@dataclass
class GrantStore:
    clock: Callable[[], float] = time.time
    code_ttl: float = CODE_TTL
    token_ttl: float = TOKEN_TTL
    max_grants: int = MAX_GRANTS
    _codes: dict[str, Grant] = field(default_factory=dict)
    _tokens: dict[str, Grant] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_code(self, grant: Grant, value: str | None = None) -> str | None:
        """Keep `grant` under `value` (or a fresh random code) for `code_ttl`; None when
        the store is full."""
        return self._issue(self._codes, grant, self.code_ttl, value)

    def issue_token(self, grant: Grant) -> str | None:
        return self._issue(self._tokens, grant, self.token_ttl, None)

    def peek_code(self, code: str, client_id: str) -> Grant | None:
        """The live code's grant if it was issued to `client_id` (not consumed)."""
        with self._lock:
            grant = self._codes.get(code)
        if grant is None or grant.client_id != client_id or grant.expires_at <= self.clock():
            return None
        return grant

    def redeem_code(self, code: str) -> Grant | None:
        with self._lock:
            grant = self._codes.pop(code, None)
        return grant if grant is not None and grant.expires_at > self.clock() else None

    def redeem_token(self, token: str) -> Grant | None:
        """Single use: the token is gone whatever the answer turns out to be."""
        with self._lock:
            grant = self._tokens.pop(token, None)
        return grant if grant is not None and grant.expires_at > self.clock() else None

    def __len__(self) -> int:
        return len(self._codes) + len(self._tokens)

    def _issue(self, table: dict[str, Grant], grant: Grant, ttl: float,
               value: str | None) -> str | None:
        now = self.clock()
        value = value or secrets.token_urlsafe(TOKEN_BYTES)
        stamped = dataclasses.replace(grant, expires_at=now + ttl)
        with self._lock:
            if len(self._codes) + len(self._tokens) >= self.max_grants:
                self._purge(now)
                if len(self._codes) + len(self._tokens) >= self.max_grants:
                    return None
            table[value] = stamped
        return value

    def _purge(self, now: float) -> None:
        for table in (self._codes, self._tokens):
            for key in [k for k, g in table.items() if g.expires_at <= now]:
                del table[key]
