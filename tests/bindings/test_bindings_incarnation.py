"""A binding is trusted only while the store still holds the write that created it
(issue 16 §1), at the store's own interface, against real redis-server processes: a restart
from an older RDB snapshot, a static binding written again, `[store] replicas` (WAIT)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
from redis_server import RedisServer

from linewarden.bindings import Binding
from linewarden.bindings.redis import NotDurable, RedisStore
from linewarden.claims import Secrets
from linewarden.decide import RequestHead, Rules, Settings, decide
from linewarden.policy.load import parse_policy

MSISDN_A, MSISDN_B = "447400900123", "447400900456"
IP = "10.3.0.2"
NAS = "10.0.0.1"


def session(ip: str, msisdn: str, sid: str, life: float = 60.0) -> Binding:
    return Binding(ip=ip, msisdn=msisdn, session_id=sid, source=NAS,
                   expires_at=time.time() + life)


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, decode_responses=True)


async def settled_lookup(store: RedisStore, ip: str, tries: int = 100) -> Binding | None:
    """The first binding Redis gives after the store's cache bound (a lookup during the
    reconnect returns None: fail closed)."""
    await asyncio.sleep(store.cache_ttl)
    for _ in range(tries):
        got = await store.lookup(ip)
        if got is not None:
            return got
        await asyncio.sleep(0.05)
    return None


def test_a_restart_from_an_older_snapshot_confirms_nothing_written_before(
        tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    static = Binding(ip="10.3.0.9", msisdn=MSISDN_A, source="static")

    async def main() -> None:
        store = RedisStore(server.url, prefix="inc:", cache_ttl=0.5, static=[static])
        await store.start()
        try:
            await store.write(static)
            await store.write(session(IP, MSISDN_A, "a"))
            admin(server).save()  # the snapshot: IP belongs to A
            assert await store.stop(IP, "a", NAS, until=time.time() + 60)
            await store.write(session(IP, MSISDN_B, "b"))  # acknowledged, not in the snapshot
            store.invalidate("*")
            got = await store.lookup(IP)
            assert got is not None and got.msisdn == MSISDN_B and got.live(time.time())
            before = store.incarnation

            server.kill()
            server.start()  # same port and directory: Redis loads the older snapshot

            got = await settled_lookup(store, IP)
            assert store.incarnation not in (None, before)
            assert store.incarnation_changes == 1
            # A's ended binding is back in Redis, but it names nobody now.
            assert got is not None and got.msisdn == MSISDN_A
            assert not got.confirmed and not got.live(time.time())
            # B's Interim is fresh accounting: it replaces the unconfirmed binding (a
            # confirmed one of another session would have been a conflict).
            assert await store.refresh(session(IP, MSISDN_B, "b"))
            store.invalidate("*")
            got = await store.lookup(IP)
            assert got is not None and got.msisdn == MSISDN_B and got.confirmed
            # The static binding was written again by the store itself.
            for _ in range(100):
                store.invalidate("*")
                got = await store.lookup(static.ip)
                if got is not None and got.confirmed:
                    break
                await asyncio.sleep(0.05)
            assert got is not None and got.confirmed and got.msisdn == MSISDN_A
        finally:
            await store.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()


def test_a_static_seed_never_replaces_a_confirmed_binding(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = RedisStore(redis_server.url, prefix="seed:", cache_ttl=0)
        await store.start()
        try:
            await store.write(session("10.3.1.1", MSISDN_B, "radius"))
            await store.seed(Binding(ip="10.3.1.1", msisdn=MSISDN_A, source="static"))
            got = await store.lookup("10.3.1.1")
            assert got is not None and got.msisdn == MSISDN_B
            await store.seed(Binding(ip="10.3.1.2", msisdn=MSISDN_A, source="static"))
            got = await store.lookup("10.3.1.2")
            assert got is not None and got.msisdn == MSISDN_A and got.confirmed
        finally:
            await store.close()
    asyncio.run(main())


def test_replicas_setting_answers_only_once_a_replica_holds_the_write(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary").start()
    replica: RedisServer | None = None

    async def write_with(replicas: int) -> None:
        store = RedisStore(primary.url, prefix="wait:", cache_ttl=0, replicas=replicas,
                           replica_timeout=0.3)
        await store.start()
        try:
            await store.write(session("10.3.2.1", MSISDN_A, "w"))
        finally:
            await store.close()

    try:
        with pytest.raises(NotDurable):  # no replica: the write is not acknowledged
            asyncio.run(write_with(1))
        replica = RedisServer(tmp_path / "replica",
                              args=("--replicaof", "127.0.0.1", str(primary.port))).start()
        deadline = time.monotonic() + 20
        while admin(replica).info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.05)
        asyncio.run(write_with(1))
        assert admin(replica).hget("wait:b:10.3.2.1", "m") == MSISDN_A
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


def test_the_core_withholds_identity_from_an_unconfirmed_binding() -> None:
    policy, _ = parse_policy('[[partners]]\nid = "billing"\npurpose = "billing"\n'
                             'hosts = ["p.test"]\nallow_raw_msisdn = true\n'
                             '[partners.headers]\nX-Up-Calling-Line-Id = "msisdn"\n',
                             "partners.toml")
    rules = Rules(policy, Settings(Secrets(b"pseudonym-secret", b"ledger-key")))
    head = RequestHead(b"GET", b"http://p.test/", "1.1", [(b"Host", b"p.test")])
    binding = Binding(ip=IP, msisdn=MSISDN_A, confirmed=False)
    decision = decide(head, binding, rules, switch_tripped=False, now=time.time())
    assert decision.withheld == "binding_unconfirmed" and decision.identity == []
    decision = decide(head, Binding(ip=IP, msisdn=MSISDN_A), rules, switch_tripped=False,
                      now=time.time())
    assert decision.withheld is None and decision.identity
