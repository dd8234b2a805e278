"""The two grant stores side by side (this process's memory; a real redis-server): the same
answers for the same calls, once-only redemption under a race, expiry on the gateway's
clock, nothing redeemable in Redis's keys, and a clear error when Redis is away. Plus the
hash rule of `verify`, against a reference written differently."""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from nv_support import Clock

from bindings.redis_server import RedisServer, free_port
from linewarden.numberverify.api import matches
from linewarden.numberverify.grants import (
    CODE_TTL,
    TOKEN_TTL,
    Grant,
    GrantStore,
    GrantStoreError,
    MemoryGrants,
)
from linewarden.numberverify.redisgrants import RedisGrants

GRANT = Grant("shop-client", "shop", "447400900222", "openid number-verification:verify",
              "https://shop.test/cb", 0.0, subject="pseudo", nonce="n", auth_time=1)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory)).start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest) -> Iterator[tuple[GrantStore, Clock]]:
    clock = Clock()
    store: GrantStore
    if request.param == "memory":
        store = MemoryGrants(clock=clock)
    else:
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushall()
        store = RedisGrants(url, prefix="t:", clock=clock)
    try:
        yield store, clock
    finally:
        store.close()


def test_a_code_is_redeemed_once(stores: tuple[GrantStore, Clock]) -> None:
    store, _ = stores
    assert store.issue_code(GRANT, "code-1")
    taken = store.redeem_code("code-1")
    assert taken is not None and taken.subject == "pseudo" and taken.nonce == "n"
    assert taken.expires_at > 0 and taken.msisdn == GRANT.msisdn
    assert store.redeem_code("code-1") is None
    assert store.redeem_code("never-issued") is None


def test_a_token_is_redeemed_once(stores: tuple[GrantStore, Clock]) -> None:
    store, _ = stores
    token = store.issue_token(GRANT)
    assert token is not None and len(token) >= 43
    assert store.redeem_token(token) is not None
    assert store.redeem_token(token) is None


def test_expiry_follows_the_gateway_clock(stores: tuple[GrantStore, Clock]) -> None:
    store, clock = stores
    assert store.issue_code(GRANT, "code-2")
    token = store.issue_token(GRANT)
    assert token is not None
    clock.offset = max(CODE_TTL, TOKEN_TTL) + 1
    assert store.redeem_code("code-2") is None
    assert store.redeem_token(token) is None


def test_first_use(stores: tuple[GrantStore, Clock]) -> None:
    store, _ = stores
    assert store.first_use("nonce\0shop\0abc", 60)
    assert not store.first_use("nonce\0shop\0abc", 60)
    assert store.first_use("nonce\0other\0abc", 60)


def test_call_counts_per_client_and_window(stores: tuple[GrantStore, Clock]) -> None:
    store, clock = stores
    clock.offset = -(clock() % 60) + 3600  # the start of some later window
    assert [store.count_call("a", 60) for _ in range(3)] == [1, 2, 3]
    assert store.count_call("b", 60) == 1
    clock.offset += 60
    assert store.count_call("a", 60) == 1


def test_racing_redeemers_get_the_code_once(stores: tuple[GrantStore, Clock]) -> None:
    """Several threads (on one instance, or on many sharing Redis) present one code."""
    store, _ = stores
    for round_ in range(20):
        code = f"race-{round_}"
        assert store.issue_code(GRANT, code)
        barrier = threading.Barrier(8)
        won: list[Grant] = []

        def redeem(code: str = code, barrier: threading.Barrier = barrier,
                   won: list[Grant] = won) -> None:
            barrier.wait()
            grant = store.redeem_code(code)
            if grant is not None:
                won.append(grant)

        threads = [threading.Thread(target=redeem) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1


def test_redis_holds_no_redeemable_value(redis_url: str) -> None:
    store = RedisGrants(redis_url, prefix="secret-check:")
    assert store.issue_code(GRANT, "the-code-itself")
    token = store.issue_token(GRANT)
    assert token is not None
    client = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in client.keys("secret-check:*")]
    assert len(keys) == 2 and all(client.pttl(k) > 0 for k in keys)
    dump = " ".join(keys) + " ".join(str(client.get(k)) for k in keys)
    assert "the-code-itself" not in dump and token not in dump
    assert hashlib.sha256(b"the-code-itself").hexdigest() in dump
    store.close()


def test_redis_away_is_an_error_not_an_answer() -> None:
    store = RedisGrants(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(GrantStoreError):
        store.issue_code(GRANT, "c")
    with pytest.raises(GrantStoreError):
        store.redeem_token("t")
    with pytest.raises(GrantStoreError):
        store.first_use("k", 1)
    with pytest.raises(GrantStoreError):
        store.count_call("c", 60)


# ---------------------------------------------------------------- the hash rule

@settings(max_examples=300, deadline=None)
@given(msisdn=st.from_regex(r"[1-9][0-9]{4,14}", fullmatch=True),
       other=st.from_regex(r"[1-9][0-9]{4,14}", fullmatch=True),
       upper=st.booleans(), plus=st.booleans())
def test_hash_matches_only_the_plus_form(msisdn: str, other: str, upper: bool,
                                         plus: bool) -> None:
    def reference(candidate: str) -> bool:
        # CAMARA: hex SHA-256 of "+<E.164 digits>", in either case.
        want = hashlib.new("sha256", ("+" + msisdn).encode("ascii")).hexdigest()
        return candidate.lower() == want

    for number in (msisdn, other):
        hashed = hashlib.sha256((("+" if plus else "") + number).encode()).hexdigest()
        hashed = hashed.upper() if upper else hashed
        assert matches("hashed", hashed.lower(), msisdn) == reference(hashed)
    assert matches("plain", "+" + msisdn, msisdn)
    assert matches("plain", "+" + other, msisdn) == (other == msisdn)
