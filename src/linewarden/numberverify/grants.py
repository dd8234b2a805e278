"""Authorization codes and access tokens: what was granted, to whom, about whom, until when.

A code is redeemed once; an access token answers one Number Verification call and is then
gone (CAMARA: single use, at most 300 s). The subscriber travels inside the grant as the
number the binding named when the code was issued, so a later change of the address's
binding cannot redirect an answer to somebody else's line.

Where the grants live is the `[store]` url's choice, like the bindings: `MemoryGrants` in
this process (one instance), `RedisGrants` (grantstore_redis.py) when the store is
`redis://`, so any instance redeems a code or token another issued — once and only once,
because redeeming is one atomic take (GETDEL), not a read then a delete.

The calls block (Redis round trips): the HTTP side runs them in a worker thread, never on
the event loop the data plane shares.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# RFC 6749 §4.1.2: "A maximum authorization code lifetime of 10 minutes is RECOMMENDED".
# The code travels in one redirect the partner follows at once; 60 s is ample.
CODE_TTL = 60.0
# CAMARA Number Verification: an access token lives at most 300 s.
TOKEN_TTL = 300.0
# Bound on outstanding grants in memory (codes + tokens + nonces): past it, expired ones
# are purged and, if still full, new grants are refused rather than letting memory grow
# without limit. (Redis bounds itself with its maxmemory; every key there has a TTL.)
MAX_GRANTS = 200_000
# 32 random bytes, URL-safe: 256 bits, like authlib's default 48-character codes.
TOKEN_BYTES = 32


class GrantStoreError(Exception):
    """The shared store did not answer: the caller answers 503, never a guess."""


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
    subject: str = ""  # the ID token's `sub`: the partner's pairwise pseudonym, not the number
    nonce: str = ""  # OIDC Core §3.1.2.1: echoed in the ID token
    auth_time: int = 0  # when the network authenticated the device (OIDC `auth_time`)

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())

    def dumps(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes) -> Grant:
        data: dict[str, Any] = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class GrantStore(Protocol):
    """Codes, tokens, seen nonces and per-client call counts, each with its expiry.

    Every method may raise GrantStoreError (the shared store is away)."""

    code_ttl: float
    token_ttl: float

    def issue_code(self, grant: Grant, value: str) -> bool:
        """Keep `grant` under `value` for `code_ttl`; False when the store is full."""
        ...

    def redeem_code(self, code: str) -> Grant | None:
        """Take the code: its grant the first time (if unexpired), None ever after."""
        ...

    def issue_token(self, grant: Grant) -> str | None:
        """A fresh token for `grant`, kept `token_ttl`; None when the store is full."""
        ...

    def redeem_token(self, token: str) -> Grant | None:
        """Take the token: single use, whatever the call it came with turns out to be."""
        ...

    def first_use(self, key: str, ttl: float) -> bool:
        """True the first time `key` is seen within `ttl` seconds (replay checks: OIDC
        nonces, client assertion jti); remembers it."""
        ...

    def count_call(self, client_id: str, window: float) -> int:
        """Count one call by `client_id` in the current fixed window of `window` seconds;
        the count so far, this call included."""
        ...

    def close(self) -> None: ...


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass
class MemoryGrants:
    """This process's memory: one instance only (the `memory://` store)."""

    clock: Callable[[], float] = time.time
    code_ttl: float = CODE_TTL
    token_ttl: float = TOKEN_TTL
    max_grants: int = MAX_GRANTS
    _codes: dict[str, Grant] = field(default_factory=dict)
    _tokens: dict[str, Grant] = field(default_factory=dict)
    _nonces: dict[str, float] = field(default_factory=dict)  # first_use key -> expiry
    _calls: dict[str, tuple[int, int]] = field(default_factory=dict)  # client -> window, n
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_code(self, grant: Grant, value: str) -> bool:
        return self._issue(self._codes, grant, self.code_ttl, value)

    def issue_token(self, grant: Grant) -> str | None:
        token = new_token()
        return token if self._issue(self._tokens, grant, self.token_ttl, token) else None

    def redeem_code(self, code: str) -> Grant | None:
        return self._take(self._codes, code)

    def redeem_token(self, token: str) -> Grant | None:
        return self._take(self._tokens, token)

    def first_use(self, key: str, ttl: float) -> bool:
        now = self.clock()
        with self._lock:
            if self._nonces.get(key, 0.0) > now:
                return False
            if self._full():
                self._purge(now)
                if self._full():
                    return False  # refused as if seen: the request answers an error
            self._nonces[key] = now + ttl
        return True

    def count_call(self, client_id: str, window: float) -> int:
        index = int(self.clock() // window)
        with self._lock:
            seen, count = self._calls.get(client_id, (index, 0))
            count = count + 1 if seen == index else 1
            self._calls[client_id] = (index, count)
        return count

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._codes) + len(self._tokens) + len(self._nonces)

    def _full(self) -> bool:
        return len(self) >= self.max_grants

    def _take(self, table: dict[str, Grant], value: str) -> Grant | None:
        with self._lock:
            grant = table.pop(value, None)
        return grant if grant is not None and grant.expires_at > self.clock() else None

    def _issue(self, table: dict[str, Grant], grant: Grant, ttl: float, value: str) -> bool:
        now = self.clock()
        stamped = dataclasses.replace(grant, expires_at=now + ttl)
        with self._lock:
            if self._full():
                self._purge(now)
                if self._full():
                    return False
            table[value] = stamped
        return True

    def _purge(self, now: float) -> None:
        for table in (self._codes, self._tokens):
            for key in [k for k, g in table.items() if g.expires_at <= now]:
                del table[key]
        for key in [k for k, t in self._nonces.items() if t <= now]:
            del self._nonces[key]
