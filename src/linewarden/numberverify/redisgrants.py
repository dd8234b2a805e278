"""Grants in the shared Redis (`[store] url = "redis://…"`): any instance redeems any code.

Layout (under the `[store] prefix`, beside the bindings):

    {prefix}nv:code:{sha256(code)}       grant JSON; PX = the code's life
    {prefix}nv:token:{sha256(token)}     grant JSON; PX = the token's life
    {prefix}nv:seen:{sha256(key)}        "1": a nonce or client assertion jti already
                                         used; PX = as long as it could be replayed
    {prefix}nv:calls:{client}:{window}   call count of one rate-limit window; PX = window

Keys are hashes of the codes and tokens, so whoever reads Redis (a dump, a replica, a
MONITOR) holds nothing that can be redeemed. Redeeming is GETDEL (Redis >= 6.2): one
atomic take, so of two instances racing with the same code exactly one gets the grant.
The grant's own `expires_at` is checked too, against the gateway's clock, so expiry does
not depend on Redis's clock alone.

Synchronous client: authlib calls back synchronously, and the HTTP side runs every call
here in a worker thread (api.py), never on the event loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable

import redis
from redis.exceptions import RedisError

from .grants import CODE_TTL, TOKEN_TTL, Grant, GrantStoreError, new_token

# The token endpoint and the API wait on these round trips (loopback: ~0.1 ms). Past
# them the answer is 503, sooner than a partner's own HTTP timeout.
SOCKET_TIMEOUT = 1.0
CONNECT_TIMEOUT = 1.0
_ERRORS = (RedisError, OSError)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class RedisGrants:
    def __init__(self, url: str, *, prefix: str = "linewarden:",
                 clock: Callable[[], float] = time.time, code_ttl: float = CODE_TTL,
                 token_ttl: float = TOKEN_TTL) -> None:
        self.clock, self.code_ttl, self.token_ttl = clock, code_ttl, token_ttl
        self._prefix = prefix + "nv:"
        self._redis: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT)

    def issue_code(self, grant: Grant, value: str) -> bool:
        return self._put("code:" + _digest(value), grant, self.code_ttl)

    def issue_token(self, grant: Grant) -> str | None:
        token = new_token()
        return token if self._put("token:" + _digest(token), grant, self.token_ttl) else None

    def redeem_code(self, code: str) -> Grant | None:
        return self._take("code:" + _digest(code))

    def redeem_token(self, token: str) -> Grant | None:
        return self._take("token:" + _digest(token))

    def first_use(self, key: str, ttl: float) -> bool:
        try:
            return bool(self._redis.set(self._prefix + "seen:" + _digest(key), b"1",
                                        px=_ms(ttl), nx=True))
        except _ERRORS as exc:
            raise GrantStoreError(f"grant store: {exc}") from None

    def count_call(self, client_id: str, window: float) -> int:
        index = int(self.clock() // window)
        key = f"{self._prefix}calls:{client_id}:{index}"
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.pexpire(key, _ms(window) + 1000)  # a second beyond: clocks differ a little
            count, _ = pipe.execute()
        except _ERRORS as exc:
            raise GrantStoreError(f"grant store: {exc}") from None
        return int(count)

    def close(self) -> None:
        self._redis.close()

    def _put(self, key: str, grant: Grant, ttl: float) -> bool:
        stamped = dataclasses.replace(grant, expires_at=self.clock() + ttl)
        try:
            # NX: a 256-bit value never collides; if it somehow did, refuse, never overwrite.
            return bool(self._redis.set(self._prefix + key, stamped.dumps(), px=_ms(ttl),
                                        nx=True))
        except _ERRORS as exc:
            raise GrantStoreError(f"grant store: {exc}") from None

    def _take(self, key: str) -> Grant | None:
        try:
            raw = self._redis.getdel(self._prefix + key)
        except _ERRORS as exc:
            raise GrantStoreError(f"grant store: {exc}") from None
        if not isinstance(raw, bytes):
            return None
        grant = Grant.loads(raw)
        return grant if grant.expires_at > self.clock() else None


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
