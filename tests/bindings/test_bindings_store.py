"""The store contract, run against memory://, Redis with the cache and Redis without."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis_server import RedisServer, free_port

from linewarden.bindings import Binding, BindingStore
from linewarden.bindings.memory import MemoryStore
from linewarden.bindings.redis import RedisStore

MSISDN_A, MSISDN_B = "447400900123", "447400900456"
_prefixes = itertools.count()

Factory = Callable[[], BindingStore]
Body = Callable[[BindingStore], Awaitable[None]]


def run(factory: Factory, body: Body) -> None:
    async def main() -> None:
        store = factory()
        await store.start()
        try:
            await body(store)
        finally:
            await store.close()
    asyncio.run(main())


@pytest.fixture(params=["memory", "redis", "redis-nocache"])
def factory(request: pytest.FixtureRequest) -> Factory:
    if request.param == "memory":
        return MemoryStore
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"t{next(_prefixes)}:"  # every test its own key space
    ttl = 0.0 if request.param == "redis-nocache" else 1.0
    return lambda: RedisStore(server.url, prefix=prefix, cache_ttl=ttl)


def session(ip: str, msisdn: str = MSISDN_A, sid: str = "s1", source: str = "10.0.0.1",
            life: float = 60.0, **attributes: str) -> Binding:
    return Binding(ip=ip, msisdn=msisdn, session_id=sid, source=source,
                   expires_at=time.time() + life, attributes=attributes)


async def fresh(store: BindingStore, ip: str) -> Binding | None:
    """A read that no cache answers: a shared store's own writes invalidate it, but only
    once the pub/sub message is back."""
    if isinstance(store, RedisStore):
        store.invalidate("*")
    return await store.lookup(ip)


def test_write_then_lookup_round_trips_every_field(factory: Factory) -> None:
    async def body(store: BindingStore) -> None:
        written = session("10.1.0.1", apn="internet", rat_type="6")
        await store.write(written)
        got = await fresh(store, "10.1.0.1")
        assert got is not None
        assert (got.ip, got.msisdn, got.session_id, got.source) == (
            "10.1.0.1", MSISDN_A, "s1", "10.0.0.1")
        assert dict(got.attributes) == {"apn": "internet", "rat_type": "6"}
        assert got.expires_at == pytest.approx(written.expires_at, abs=1e-3)
        assert got.live(time.time())
        assert await fresh(store, "10.1.0.2") is None
    run(factory, body)


def test_static_binding_never_expires(factory: Factory) -> None:
    async def body(store: BindingStore) -> None:
        await store.write(Binding(ip="10.1.0.9", msisdn=MSISDN_A, source="static"))
        got = await fresh(store, "10.1.0.9")
        assert got is not None and got.expires_at is None and got.live(time.time() + 1e9)
    run(factory, body)


def test_start_replaces_the_previous_binding(factory: Factory) -> None:
    async def body(store: BindingStore) -> None:
        await store.write(session("10.1.0.1", MSISDN_A, "old"))
        await store.write(session("10.1.0.1", MSISDN_B, "new", source="10.0.0.2"))
        got = await fresh(store, "10.1.0.1")
        assert got is not None and (got.msisdn, got.session_id) == (MSISDN_B, "new")
        # the old NAS restarting must not drop the address's new session
        assert await store.drop_source("10.0.0.1") == 0
        assert await fresh(store, "10.1.0.1") is not None
    run(factory, body)


def test_stop_deletes_only_its_own_session(factory: Factory) -> None:
    async def body(store: BindingStore) -> None:
        await store.write(session("10.1.0.1", sid="current"))
        assert not await store.remove("10.1.0.1", "late-stop-of-older-session")
        assert await fresh(store, "10.1.0.1") is not None
        assert await store.remove("10.1.0.1", "current")
        assert await fresh(store, "10.1.0.1") is None
        assert not await store.remove("10.1.0.1", "current")
        await store.write(session("10.1.0.1", sid="x"))
        assert await store.remove("10.1.0.1")  # admin drop: any session
    run(factory, body)


def test_a_late_interim_never_brings_back_a_stopped_session(factory: Factory) -> None:
    async def body(store: BindingStore) -> None:
        await store.write(session("10.1.0.1", sid="a"))
        assert await store.stop("10.1.0.1", "a", "10.0.0.1", until=time.time() + 60)
        assert await fresh(store, "10.1.0.1") is None
        # The Interim of the ended session, late or retransmitted: acknowledged, no binding
        # (the address may already be another subscriber's, who would get A's number).
        assert await store.refresh(session("10.1.0.1", sid="a"))
        assert await fresh(store, "10.1.0.1") is None
        # The same session id from another NAS is another session; a new session is new.
        assert await store.refresh(session("10.1.0.1", sid="a", source="10.0.0.2"))
        assert await fresh(store, "10.1.0.1") is not None
        await store.remove("10.1.0.1")
        assert await store.refresh(session("10.1.0.1", MSISDN_B, sid="b"))
        got = await fresh(store, "10.1.0.1")
        assert got is not None and got.msisdn == MSISDN_B
        # A Stop for a session the address no longer has still ends that session.
        assert not await store.stop("10.1.0.1", "old", "10.0.0.1", until=time.time() + 60)
        assert await fresh(store, "10.1.0.1") is not None
        # Remembered only until `until`: after it an Interim creates again (TTL semantics).
        assert await store.stop("10.1.0.1", "b", "10.0.0.1", until=time.time() + 0.2)
        await asyncio.sleep(0.3)
        assert await store.refresh(session("10.1.0.1", sid="b"))
        assert await fresh(store, "10.1.0.1") is not None
    run(factory, body)


def test_interim_refreshes_creates_and_fails_closed_on_conflict(factory: Factory) -> None:
    async def body(store: BindingStore) -> None:
        assert await store.refresh(session("10.1.0.1", sid="a", life=10))  # creates
        assert await store.refresh(session("10.1.0.1", sid="a", life=100))  # extends
        got = await fresh(store, "10.1.0.1")
        assert got is not None and got.expires_at is not None
        assert got.expires_at > time.time() + 50
        # an interim of another session: we cannot tell which is right, so no identity
        assert not await store.refresh(session("10.1.0.1", MSISDN_B, sid="b"))
        assert await fresh(store, "10.1.0.1") is None
    run(factory, body)


def test_accounting_off_drops_every_binding_of_that_nas_only(factory: Factory) -> None:
    async def body(store: BindingStore) -> None:
        for n in range(5):
            await store.write(session(f"10.2.0.{n}", source="10.0.0.1"))
        await store.write(session("10.3.0.1", source="10.0.0.2"))
        await store.write(Binding(ip="10.4.0.1", msisdn=MSISDN_B, source="static"))
        assert await store.drop_source("10.0.0.1") == 5
        assert all([await fresh(store, f"10.2.0.{n}") is None for n in range(5)])
        assert await fresh(store, "10.3.0.1") is not None
        assert await fresh(store, "10.4.0.1") is not None
    run(factory, body)


def test_expired_binding_gives_no_identity(factory: Factory) -> None:
    async def body(store: BindingStore) -> None:
        await store.write(session("10.1.0.1", life=0.3))
        assert (await fresh(store, "10.1.0.1")) is not None
        await asyncio.sleep(0.5)
        got = await fresh(store, "10.1.0.1")
        assert got is None or not got.live(time.time())
        await store.write(session("10.1.0.2", life=-1))  # dead on arrival
        got = await fresh(store, "10.1.0.2")
        assert got is None or not got.live(time.time())
    run(factory, body)


def test_addresses_are_canonical_and_ipv6_clients_match_their_64(factory: Factory) -> None:
    async def body(store: BindingStore) -> None:
        await store.write(session("2001:db8:1:2::", sid="v6"))
        got = await fresh(store, "2001:0db8:0001:0002:abcd::17")
        assert got is not None and got.session_id == "v6"
        assert await fresh(store, "2001:db8:1:3::1") is None
        await store.write(session("0::5", sid="five"))
        got = await fresh(store, "::5")
        assert got is not None and got.session_id == "five"
        assert await fresh(store, "not-an-address") is None
    run(factory, body)


def test_listing_respects_the_limit(factory: Factory) -> None:
    async def body(store: BindingStore) -> None:
        for n in range(7):
            await store.write(session(f"10.5.0.{n}", source=f"10.0.0.{n % 2}"))
        assert len(await store.listing(100)) == 7
        assert len(await store.listing(3)) == 3
        ips = {b.ip for b in await store.listing(100)}
        assert ips == {f"10.5.0.{n}" for n in range(7)}
    run(factory, body)


def test_memory_count_is_exact() -> None:
    async def body(store: BindingStore) -> None:
        for n in range(3):
            await store.write(session(f"10.6.0.{n}"))
        assert store.count() == 3
    run(MemoryStore, body)


# ---------------------------------------------------------------- Redis only

def test_two_instances_share_one_view_within_the_staleness_bound(
        redis_server: RedisServer) -> None:
    bound = 1.0

    async def main() -> None:
        a = RedisStore(redis_server.url, prefix="share:", cache_ttl=bound)
        b = RedisStore(redis_server.url, prefix="share:", cache_ttl=bound)
        for s in (a, b):
            await s.start()
            await asyncio.wait_for(s.subscribed.wait(), 5)
        try:
            assert await b.lookup("10.7.0.1") is None  # a cached "no binding" ...
            await a.write(session("10.7.0.1", sid="one"))
            assert await _within(bound, lambda: b.lookup("10.7.0.1"), present=True)
            got = await b.lookup("10.7.0.1")  # ... now cached on b
            assert got is not None and got.session_id == "one"
            await a.write(session("10.7.0.1", MSISDN_B, sid="two"))  # replaced
            assert await _within(bound, lambda: _session_of(b, "10.7.0.1"), want="two")
            await a.remove("10.7.0.1", "two")
            assert await _within(bound, lambda: b.lookup("10.7.0.1"), present=False)
        finally:
            await a.close()
            await b.close()
    asyncio.run(main())


async def _session_of(store: BindingStore, ip: str) -> str | None:
    got = await store.lookup(ip)
    return None if got is None else got.session_id


async def _within(bound: float, probe: Callable[[], Awaitable[object]], *,
                  present: bool | None = None, want: object = None) -> bool:
    deadline = time.monotonic() + bound
    while True:
        value = await probe()
        ok = (value is not None) == present if present is not None else value == want
        if ok:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)


def test_unreachable_redis_fails_closed_and_refuses_writes() -> None:
    async def main() -> None:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", cache_ttl=1.0)
        await store.start()
        try:
            assert await store.lookup("10.8.0.1") is None
            with pytest.raises(Exception):  # noqa: B017 - any error: the NAS retries
                await store.write(session("10.8.0.1"))
        finally:
            await store.close()
    asyncio.run(main())


def test_redis_recovers_on_its_own(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = RedisServer(tmp_path_factory.mktemp("redis-restart")).start()

    async def main() -> None:
        store = RedisStore(server.url, cache_ttl=0)
        await store.start()
        try:
            await store.write(session("10.9.0.1"))
            server.stop()
            assert await store.lookup("10.9.0.1") is None  # down: no identity, no raise
            server.start()  # same port, empty (no persistence)
            await store.write(session("10.9.0.1", sid="back"))
            got = await store.lookup("10.9.0.1")
            assert got is not None and got.session_id == "back"
        finally:
            await store.close()
    try:
        asyncio.run(main())
    finally:
        server.stop()


def test_memory_store_remembers_a_bounded_number_of_ended_sessions() -> None:

    async def body(store: BindingStore) -> None:
        assert isinstance(store, MemoryStore)
        for n in range(25):
            await store.stop("10.5.0.1", f"s{n}", "10.0.0.1", until=time.time() + 60)
            assert len(store._ended) <= 10
        # the newest are the ones kept: a late Interim is seconds late, not hours
        assert await store.refresh(session("10.5.0.1", sid="s24"))
        assert await fresh(store, "10.5.0.1") is None
        # when most have expired, the expired go first and nothing else needs to
        for n in range(9):
            await store.stop("10.5.0.2", f"old{n}", "10.0.0.1", until=time.time() + 0.05)
        await asyncio.sleep(0.1)
        await store.stop("10.5.0.2", "new", "10.0.0.1", until=time.time() + 60)
        await store.stop("10.5.0.2", "newer", "10.0.0.1", until=time.time() + 60)
        assert set(store._ended) >= {("10.0.0.1", "new"), ("10.0.0.1", "newer")}
    run(lambda: MemoryStore(ended_max=10), body)


def test_concurrent_redis_writes_share_round_trips_and_all_land(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    round_trips = []
    original = RedisStore._pipeline

    async def counted(self: RedisStore, batch: list[Any]) -> list[Any]:
        round_trips.append(len(batch))
        return await original(self, batch)

    monkeypatch.setattr(RedisStore, "_pipeline", counted)

    async def body(store: BindingStore) -> None:
        ips = [f"10.6.{n // 250}.{n % 250}" for n in range(600)]
        await asyncio.gather(*(store.write(session(ip, sid=ip)) for ip in ips))
        assert sum(round_trips) == 600 and len(round_trips) < 600 / 10
        assert max(round_trips) <= 256
        assert all([(await fresh(store, ip)) is not None for ip in ips])
        # compare-and-delete still compares, batched or not
        done = await asyncio.gather(*(store.remove(ip, "wrong") for ip in ips[:50]),
                                    *(store.remove(ip, ip) for ip in ips[50:100]))
        assert done == [False] * 50 + [True] * 50
    run(lambda: RedisStore(redis_server.url, prefix=f"t{next(_prefixes)}:"), body)
