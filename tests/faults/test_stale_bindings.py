"""Issue 16 §1, the way it broke: a Redis that comes back with less than it acknowledged
must never hand one subscriber's identity to another.

Real parts: `linewarden serve` with the SQLite ledger, redis-server (RDB snapshot; a
replica), FreeRADIUS `radclient` for the accounting, the echo origin keeping every request
it read. While load runs from 127.0.0.2 the whole time, 127.0.0.2 moves from subscriber A
to B (an acknowledged Stop and Start), then Redis loses those writes:

* restart from an older snapshot: SAVE while A holds the address, Stop A + Start B,
  SIGKILL, restart from the snapshot (A's binding is back);
* failover: a replica stops following before Stop A + Start B, the primary is killed and
  a forwarder (the VIP) moves to the replica.

Owed at the origin: no request after the Stop carries A's number; from the loss until B's
next Interim-Update no request carries any identity; after it, B's (and never A's); every
identity the origin saw has its ledger row.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from bindings_support import accounting_attributes, radclient
from fault_support import get, metric_sum, metrics, no_raw_numbers, wait_for
from forwarder import Forwarder
from redis_server import RedisServer

from linewarden.claims import subscriber_key
from linewarden.ledger import open_store
from lwtest import Gateway, Origin, free_port, launch_serve

MSISDN_A, MSISDN_B = "447400900123", "447400900456"
ADDRESS = "127.0.0.2"
SECRET = "s3cret-for-tests"
LEDGER_KEY = "test-ledger-key"
HEADER = "x-up-calling-line-id"
CACHE_TTL = 0.5
LOAD_THREADS = 4


def _config(directory: Path, origin_port: int, store_url: str, radius_port: int,
            proxy_port: int, web_port: int) -> Path:
    """No static bindings: 127.0.0.2 belongs to whoever RADIUS says."""
    path = directory / "linewarden.toml"
    path.write_text(f"""
state_dir = "{directory}/state"

[proxy]
listen = "127.0.0.1:{proxy_port}"
instance_id = "stale"

[proxy.resolve]
"partner.test" = "127.0.0.1:{origin_port}"

[identity]
operator = "234-10"
pseudonym_secret = "test-pseudonym-secret"

[ledger]
url = "sqlite:///{directory}/state/ledger.db"
key = "{LEDGER_KEY}"

[store]
url = "{store_url}"
cache_ttl = {CACHE_TTL}

[radius]
listen = "127.0.0.1:{radius_port}"
secret = "{SECRET}"
interim_interval = 30
ttl = 120
[[radius.clients]]
address = "127.0.0.1"

[web]
listen = "127.0.0.1:{web_port}"

[[partners]]
id = "billing-partner"
purpose = "billing"
hosts = ["partner.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"
""")
    return path


class Scenario:
    """The gateway, the load from ADDRESS, and the phase every request was sent in."""

    def __init__(self, directory: Path, origin: Origin, store_url: str) -> None:
        self.origin = origin
        self.radius_port = free_port()
        proc, proxy_port, web_port, config = launch_serve(
            directory, lambda proxy, web: _config(directory, origin.port, store_url,
                                                  self.radius_port, proxy, web))
        self.gw = Gateway(proc, proxy_port, web_port, directory, config)
        self.tag = directory.name
        self.phase = "a"
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._load, args=(n,))
                         for n in range(LOAD_THREADS)]

    def accounting(self, status: str, msisdn: str, session: str) -> bool:
        return radclient(self.radius_port, SECRET, accounting_attributes(
            status, ADDRESS, msisdn, session, "10.0.0.1"), timeout=2.0, retries=3)

    @contextmanager
    def load(self) -> Iterator[None]:
        for thread in self._threads:
            thread.start()
        try:
            yield
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(30)

    def _load(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            phase = self.phase  # read before the request leaves
            status, _ = get(self.gw.proxy_port, f"http://partner.test/{self.tag}/{phase}/{n}-{i}",
                            source=ADDRESS, timeout=5)
            self.statuses[status] += 1
            i += 1

    def seen(self) -> dict[str, Counter[str]]:
        """phase -> identity value (or "") -> requests the origin read."""
        out: dict[str, Counter[str]] = {}
        prefix = f"/{self.tag}/"
        for r in list(self.origin.requests):
            if r.target.startswith(prefix):
                phase = r.target[len(prefix):].split("/", 1)[0]
                values = r.values(HEADER)
                assert len(values) <= 1, r.raw[:300]
                out.setdefault(phase, Counter())[values[0] if values else ""] += 1
        return out

    def identity_seen(self, phase: str, msisdn: str) -> bool:
        return self.seen().get(phase, Counter())[msisdn] > 0

    def ledger_rows(self, msisdn: str) -> int:
        store = open_store(f"sqlite:///{self.gw.directory}/state/ledger.db").open()
        try:
            rows = store.query("SELECT COUNT(*) FROM disclosures WHERE subscriber_key = ?",
                               (bytes.fromhex(subscriber_key(LEDGER_KEY.encode(), msisdn)),))
        finally:
            store.close()
        return int(rows[0][0])

    def check(self, lost_phases: tuple[str, ...]) -> dict[str, Counter[str]]:
        seen = self.seen()
        after_stop = [p for p in seen if p != "a"]
        for phase in after_stop:  # 0 wrong-subscriber identities
            assert seen[phase][MSISDN_A] == 0, (phase, seen)
        for phase in lost_phases:  # nothing at all until B is confirmed again
            assert set(seen.get(phase, {})) <= {""}, (phase, seen)
            assert seen.get(phase, Counter())[""] > 0, f"no load in phase {phase}: {seen}"
        assert seen["a"][MSISDN_A] > 0 and seen["b"][MSISDN_B] > 0, seen
        assert seen["reconfirmed"][MSISDN_B] > 0, seen
        for msisdn in (MSISDN_A, MSISDN_B):  # 0 identities without a ledger row
            sent = sum(c[msisdn] for c in seen.values())
            assert self.ledger_rows(msisdn) >= sent, (msisdn, sent)
        text = metrics(self.gw)
        assert metric_sum(text, "linewarden_withheld_disclosures",
                          reason="binding_unconfirmed") > 0
        assert metric_sum(text, "linewarden_store_incarnation_changes") == 1
        assert set(self.statuses) == {200}, self.statuses
        assert self.gw.alive() and no_raw_numbers(self.gw) == []
        return seen


def _move_a_to_b(s: Scenario) -> None:
    assert s.accounting("Start", MSISDN_A, "session-a")
    assert wait_for(lambda: s.identity_seen("a", MSISDN_A), timeout=10)


def _acknowledged_stop_and_start(s: Scenario) -> None:
    assert s.accounting("Stop", MSISDN_A, "session-a")
    assert s.accounting("Start", MSISDN_B, "session-b")
    s.phase = "b"
    assert wait_for(lambda: s.identity_seen("b", MSISDN_B), timeout=10)


def _reconfirm(s: Scenario, lose: Callable[[], None]) -> None:
    """`lose()` ends in phase "lost": the store has lost B's Start."""
    lose()
    # The load runs against the store that lost B's Start; give it a while.
    assert wait_for(lambda: s.seen().get("lost", Counter())[""] >= 20, timeout=30)
    s.phase = "confirming"  # B's identity may come back from here on
    assert s.accounting("Interim-Update", MSISDN_B, "session-b")
    s.phase = "reconfirmed"
    assert wait_for(lambda: s.identity_seen("reconfirmed", MSISDN_B), timeout=10)


def test_redis_restarted_from_an_older_snapshot(tmp_path: Path, origin: Origin) -> None:
    server = RedisServer(tmp_path / "redis").start()
    s = Scenario(tmp_path / "snapshot", origin, server.url)
    try:
        with s.load():
            _move_a_to_b(s)
            redis.Redis(port=server.port).save()  # the snapshot: 127.0.0.2 is A's
            _acknowledged_stop_and_start(s)

            def crash_and_restore() -> None:
                server.kill()
                s.phase = "down"
                # Down longer than the cache bound, as a real restart is.
                threading.Event().wait(2 * CACHE_TTL)
                s.phase = "lost"
                server.start()  # same directory: loads the snapshot, A's binding included
                assert redis.Redis(port=server.port).hget(
                    f"linewarden:b:{ADDRESS}", "m") == MSISDN_A.encode()

            _reconfirm(s, crash_and_restore)
        seen = s.check(lost_phases=("lost",))
        print("snapshot restart, identities at the origin by phase:", dict(seen))
    finally:
        s.gw.stop()
        server.stop()


def test_failover_to_a_replica_that_missed_the_last_writes(tmp_path: Path,
                                                          origin: Origin) -> None:
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica",
                          args=("--replicaof", "127.0.0.1", str(primary.port))).start()
    vip = Forwarder(primary.port)
    s = Scenario(tmp_path / "failover", origin, vip.url)
    follower = redis.Redis(port=replica.port)
    try:
        with s.load():
            _move_a_to_b(s)
            assert wait_for(lambda: follower.hget(f"linewarden:b:{ADDRESS}", "m")
                            == MSISDN_A.encode(), timeout=20)
            follower.replicaof("NO", "ONE")  # the replica falls behind from here on
            _acknowledged_stop_and_start(s)
            assert follower.hget(f"linewarden:b:{ADDRESS}", "m") == MSISDN_A.encode()

            def fail_over() -> None:
                primary.kill()
                vip.switch(replica.port)  # the promoted replica, A's binding included
                s.phase = "down"
                # B's binding may still answer from a gateway's cache for CACHE_TTL (the
                # documented staleness bound: it is B's own); after it, nothing.
                threading.Event().wait(2 * CACHE_TTL)
                s.phase = "lost"

            _reconfirm(s, fail_over)
        seen = s.check(lost_phases=("lost",))
        print("failover, identities at the origin by phase:", dict(seen))
    finally:
        s.gw.stop()
        vip.close()
        replica.stop()
        primary.stop()
