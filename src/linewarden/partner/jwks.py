"""The operator's public keys: a parsed `KeySet`, and a `JWKSFetcher` that keeps one fresh.

The fetcher honours the JWKS response's `Cache-Control: max-age` (clamped), refetches at
once when an assertion names a `kid` it does not know (the operator rotated); a kid still
unknown after that fetch blocks unknown-kid fetches for `REFETCH_INTERVAL`, so a stream of
made-up kids costs the operator one fetch per interval, not one per request. When the
operator is unreachable it keeps using what it has for `MAX_STALE`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from .errors import KeysUnavailable

# The algorithms a linewarden gateway signs with. Never HMAC (a public key used as an HMAC
# secret forges anything, RFC 8725 §2.1) and never `none`.
SUPPORTED_ALGORITHMS = ("ES256", "EdDSA")

DEFAULT_CACHE = 300.0  # no max-age from the server: the gateway's own value (300 s)
MIN_CACHE = 30.0  # never hammer the operator, whatever it says
MAX_CACHE = 3600.0  # a key removed by the operator is gone within an hour at most
REFETCH_INTERVAL = 10.0  # after a kid stayed unknown (or a fetch failed): wait 10 s
MAX_STALE = 24 * 3600.0  # operator unreachable: keep verifying with known keys for a day
FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 256 * 1024  # a JWKS is a few hundred bytes per key

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age=(\d+)")


@dataclass(frozen=True)
class KeySet:
    """Public keys by kid. Keys with an unsupported type or algorithm are left out."""

    keys: Mapping[str, jwt.PyJWK] = field(default_factory=dict)

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        keys: dict[str, jwt.PyJWK] = {}
        entries = jwks.get("keys")
        if not isinstance(entries, list):
            return cls({})
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            if entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue
            if key.algorithm_name in SUPPORTED_ALGORITHMS:
                keys[entry["kid"]] = key
        return cls(keys)

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self.keys.get(kid)


def _http_get(url: str, timeout: float) -> tuple[bytes, str]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read(MAX_JWKS_BYTES + 1)
        return body, response.headers.get("Cache-Control", "")


class JWKSFetcher:
    """Fetches and caches the JWKS at `url` (e.g. http://gateway/.well-known/jwks.json).

    Thread-safe; `key()` may block for one fetch (at most `timeout`). Async code asks
    `would_fetch(kid)` first and runs `key()` in a thread when it is True."""

    def __init__(self, url: str, *, timeout: float = FETCH_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic,
                 get: Callable[[str, float], tuple[bytes, str]] = _http_get) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"JWKS url must be http(s)://, not {url!r}")
        self.url = url
        self.timeout = timeout
        self.fetches = 0  # successful fetches, for tests and metrics
        self._clock = clock
        self._get = get
        self._lock = threading.Lock()
        self._keys = KeySet()
        self._fetched_at: float | None = None  # last successful fetch
        self._failed_at: float | None = None  # last failed fetch
        self._missed_at: float | None = None  # last time a kid was unknown even after fetching
        self._fresh_for = 0.0

    def would_fetch(self, kid: str | None) -> bool:
        now = self._clock()
        return self._may_try(now) and (
            self._stale(now) or (kid is not None and self._keys.get(kid) is None
                                 and self._may_miss(now)))

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key named `kid`, fetching when the cache is stale or does not know it.

        An unknown kid right after a rotation triggers one refetch at once; a kid still
        unknown after a fetch blocks further unknown-kid fetches for `REFETCH_INTERVAL`."""
        with self._lock:
            now = self._clock()
            fetched = False
            if self._stale(now):
                self._refresh(now)
                fetched = True
            key = self._keys.get(kid)
            if key is None and not fetched and self._may_miss(now):
                self._refresh(now)
                fetched = True
                key = self._keys.get(kid)
            if key is None and fetched:
                self._missed_at = now
            return key

    def refresh(self) -> KeySet:
        with self._lock:
            self._refresh(self._clock())
            return self._keys

    def _stale(self, now: float) -> bool:
        return self._fetched_at is None or now >= self._fetched_at + self._fresh_for

    def _may_miss(self, now: float) -> bool:
        return self._missed_at is None or now >= self._missed_at + REFETCH_INTERVAL

    def _may_try(self, now: float) -> bool:
        return self._failed_at is None or now >= self._failed_at + REFETCH_INTERVAL

    def _usable(self, now: float) -> bool:
        return self._fetched_at is not None and now <= self._fetched_at + MAX_STALE

    def _refresh(self, now: float) -> None:
        if not self._may_try(now):  # the operator failed us a moment ago: do not hammer it
            if not self._usable(now):
                raise KeysUnavailable(f"the operator's keys at {self.url} are unavailable "
                                      "(last fetch failed; retrying shortly)")
            return
        try:
            body, cache_control = self._get(self.url, self.timeout)
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError("JWKS larger than 256 KiB")
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("JWKS is not a JSON object")
        except (OSError, ValueError) as exc:
            self._failed_at = now
            if not self._usable(now):
                raise KeysUnavailable(f"cannot fetch the operator's keys from {self.url}: "
                                      f"{exc}") from None
            return  # keep the keys we have (stale-if-error)
        self._keys = KeySet.from_jwks(data)
        self._fetched_at, self._failed_at = now, None
        self.fetches += 1
        match = _MAX_AGE.search(cache_control)
        age = float(match.group(1)) if match else DEFAULT_CACHE
        self._fresh_for = min(max(age, MIN_CACHE), MAX_CACHE)
