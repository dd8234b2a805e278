"""Faults in what the gateway depends on (issue 9, item 2): the ledger database full,
locked or stopped; Redis stopped and restarted; a flood of junk RADIUS datagrams; a policy
file truncated mid-write during reload. Invariants 1-5 hold throughout, and the gateway
recovers by itself once the fault ends."""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import struct
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from bindings_support import accounting_attributes, radclient
from fault_support import (
    FORGED,
    get,
    metric_sum,
    metrics,
    no_raw_numbers,
    start_ledger_gateway,
    wait_for,
)
from redis_server import RedisServer

from linewarden.claims import subscriber_key
from linewarden.ledger import open_store
from lwtest import MSISDN_1, MSISDN_2, Gateway, Origin, free_port, start_gateway

LEDGER_KEY = b"test-ledger-key"  # lwtest.gateway_config's [ledger] key
IDENTITY = f"X-Up-Calling-Line-Id: {MSISDN_1}".encode()


def ledger_rows(gw: Gateway, msisdn: str = MSISDN_1) -> int:
    store = open_store(f"sqlite:///{gw.directory}/state/ledger.db").open()
    try:
        rows = store.query("SELECT COUNT(*) FROM disclosures WHERE subscriber_key = ?",
                           (bytes.fromhex(subscriber_key(LEDGER_KEY, msisdn)),))
    finally:
        store.close()
    return int(rows[0][0])


def partner_round(gw: Gateway, n: int, tag: str) -> tuple[int, int]:
    """n partner requests: (answered 200, carrying the identity)."""
    ok = enriched = 0
    for i in range(n):
        status, body = get(gw.proxy_port, f"http://partner.test/{tag}/{i}",
                           headers=f"X-MSISDN: {FORGED}\r\n")
        ok += status == 200
        enriched += IDENTITY in body
        assert FORGED.encode() not in body
    return ok, enriched


def test_ledger_full_withholds_then_recovers(tmp_path: Path, origin: Origin) -> None:
    cap = tmp_path / "max_pages"
    cap.write_text("0")
    env = {"LW_SQLITE_MAX_PAGES": str(cap)}
    gw = start_ledger_gateway(tmp_path / "gw", origin.port, env=env)
    try:  # first run: create the schema, learn its size
        assert partner_round(gw, 1, "init") == (1, 1)
    finally:
        gw.stop()
    with sqlite3.connect(tmp_path / "gw/state/ledger.db") as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    cap.write_text(str(pages + 6))  # a "disk" with ~24 KiB to spare
    gw = start_ledger_gateway(tmp_path / "gw", origin.port, env=env)
    try:
        ok, enriched = partner_round(gw, 400, "fill")
        assert ok == 400  # traffic flows whatever the ledger does
        assert 0 < enriched < 400, "the capped ledger never filled (or never took a row)"
        rows_full = ledger_rows(gw)
        assert rows_full >= enriched + 1  # every identity sent has its row (invariant 4)
        ok, enriched = partner_round(gw, 20, "still-full")
        assert (ok, enriched) == (20, 0)
        cap.write_text("0")  # the disk is freed
        assert wait_for(lambda: partner_round(gw, 1, "probe")[1] == 1, timeout=15)
        ok, enriched = partner_round(gw, 20, "recovered")
        assert (ok, enriched) == (20, 20)
        assert ledger_rows(gw) >= rows_full + 21
        assert no_raw_numbers(gw) == []
    finally:
        gw.stop()
    assert "ledger" in gw.log()  # the failure was reported, not silent


def test_ledger_locked_withholds_then_recovers(tmp_path: Path, origin: Origin) -> None:
    gw = start_ledger_gateway(tmp_path, origin.port)
    try:
        assert partner_round(gw, 3, "before") == (3, 3)
        db = sqlite3.connect(tmp_path / "state/ledger.db", isolation_level=None, timeout=10)
        db.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            start = time.monotonic()
            ok, enriched = partner_round(gw, 10, "locked")
            elapsed = time.monotonic() - start
        finally:
            db.execute("ROLLBACK")
            db.close()
        assert (ok, enriched) == (10, 0)
        assert elapsed < 10 * 1.0, "requests stalled behind the locked ledger"
        assert wait_for(lambda: partner_round(gw, 1, "probe")[1] == 1, timeout=15)
        assert partner_round(gw, 5, "after") == (5, 5)
        assert ledger_rows(gw) >= 3 + 1 + 5
        assert no_raw_numbers(gw) == []
    finally:
        gw.stop()


def test_ledger_postgres_stopped_then_restarted(tmp_path: Path, origin: Origin) -> None:
    from ledger.pg import PrivatePostgres

    pg = PrivatePostgres(fsync=False).start()
    try:
        url = pg.create_database()
        gw = start_ledger_gateway(tmp_path, origin.port, ledger_url=url)
        try:
            assert partner_round(gw, 3, "pg-up") == (3, 3)
            pg.stop()
            start = time.monotonic()
            assert partner_round(gw, 10, "pg-down") == (10, 0)
            assert time.monotonic() - start < 10.0
            pg.start()
            assert wait_for(lambda: partner_round(gw, 1, "probe")[1] == 1, timeout=20)
            assert partner_round(gw, 5, "pg-back") == (5, 5)
            assert no_raw_numbers(gw) == []
        finally:
            gw.stop()
    finally:
        pg.cleanup()


# ---------------------------------------------------------------- Redis and RADIUS

def _radius_extra(store_url: str, radius_port: int) -> str:
    return f"""
[store]
url = "{store_url}"
cache_ttl = 0.5

[radius]
listen = "127.0.0.1:{radius_port}"
secret = "s3cret-for-tests"
interim_interval = 30
ttl = 60
[[radius.clients]]
address = "127.0.0.1"
"""


def _start(radius_port: int, client_ip: str, msisdn: str) -> bool:
    return radclient(radius_port, "s3cret-for-tests",
                     accounting_attributes("Start", client_ip, msisdn, session=client_ip),
                     timeout=1.0, retries=1)


def test_redis_stopped_and_restarted(tmp_path: Path, origin: Origin) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    radius_port = free_port()
    gw = start_gateway(tmp_path / "gw", origin.port,
                       extra=_radius_extra(redis.url, radius_port))
    client = "127.0.0.3"
    try:
        assert _start(radius_port, client, MSISDN_2)
        identity = f"X-Up-Calling-Line-Id: {MSISDN_2}".encode()
        assert identity in get(gw.proxy_port, "http://partner.test/r1", source=client)[1]
        redis.stop()
        time.sleep(1.0)  # past cache_ttl: the gateway must ask Redis now
        start = time.monotonic()
        for i in range(10):
            status, body = get(gw.proxy_port, f"http://partner.test/down{i}", source=client)
            assert status == 200 and identity not in body  # fail closed, traffic flows
        assert time.monotonic() - start < 10 * 2.5  # bounded, not stalled per request
        # Withheld for the real cause: the kill switch's shared state is unconfirmed, it
        # was never tripped (issue 16: this was counted as "killswitch").
        assert wait_for(lambda: get(gw.proxy_port, "http://partner.test/unknown",
                                    source=client)[0] == 200 and metric_sum(
            metrics(gw), "linewarden_withheld_disclosures",
            reason="killswitch_unknown") >= 1, timeout=10)
        assert metric_sum(metrics(gw), "linewarden_withheld_disclosures",
                          reason="killswitch") == 0
        assert not _start(radius_port, "127.0.0.4", MSISDN_1)  # unanswered: NAS retries
        redis.start()  # same port, empty (no persistence): the NAS re-sends the Start
        assert wait_for(lambda: _start(radius_port, client, MSISDN_2), timeout=20)
        assert wait_for(lambda: identity in get(gw.proxy_port, "http://partner.test/back",
                                                source=client)[1], timeout=10)
        assert gw.alive() and no_raw_numbers(gw) == []
        assert metric_sum(metrics(gw), "linewarden_radius_dropped",
                          reason="store_failed") >= 1
    finally:
        gw.stop()
        redis.stop()


def _junk(rng: random.Random, secret: bytes) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 64))  # noise, mostly too short
    if kind == 1:
        return rng.randbytes(rng.randrange(4097, 6000))  # too long
    attrs = b"".join(bytes([rng.randrange(256), n + 2]) + rng.randbytes(n)
                     for n in (rng.randrange(0, 30) for _ in range(rng.randrange(0, 8))))
    code = 4 if kind != 2 else rng.choice([1, 2, 3, 5, 11, 255])
    length = 20 + len(attrs) if kind != 3 else rng.randrange(0, 65536)
    head = struct.pack("!BBH", code, rng.randrange(256), length)
    if kind == 5:  # authentic: the junk reaches attribute decoding
        import hashlib

        auth = hashlib.md5(head + bytes(16) + attrs + secret).digest()
    else:
        auth = rng.randbytes(16)
    return head + auth + attrs


def test_radius_survives_10000_junk_datagrams(tmp_path: Path, origin: Origin) -> None:
    radius_port = free_port()
    gw = start_gateway(tmp_path, origin.port, extra=_radius_extra("memory://", radius_port))
    try:
        rng = random.Random(9)
        stop = threading.Event()
        served: list[int] = []

        def traffic() -> None:  # the data plane keeps answering during the flood
            while not stop.is_set():
                served.append(get(gw.proxy_port, "http://partner.test/flood")[0])

        thread = threading.Thread(target=traffic)
        thread.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(10_000):
                sock.sendto(_junk(rng, b"s3cret-for-tests"), ("127.0.0.1", radius_port))
                if i % 500 == 0:
                    time.sleep(0.01)  # stay under the receive buffer: count what arrives
        stop.set()
        thread.join(10)
        assert served and set(served) == {200}
        text = metrics(gw)
        dropped = metric_sum(text, "linewarden_radius_dropped")
        assert dropped >= 9_000, dropped  # counted, by reason, not crashed on
        assert metric_sum(text, "linewarden_radius_accepted") <= 20  # junk binds nothing
        # The listener still works: a real Start binds a new subscriber.
        assert _start(radius_port, "127.0.0.5", MSISDN_2)
        _, body = get(gw.proxy_port, "http://partner.test/after-flood", source="127.0.0.5")
        assert f"X-Up-Calling-Line-Id: {MSISDN_2}".encode() in body
        assert gw.alive() and no_raw_numbers(gw) == []
    finally:
        gw.stop()


# ---------------------------------------------------------------- policy reload

POLICY_V1 = """
[[partners]]
id = "billing-partner"
purpose = "billing"
hosts = ["partner.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"
"""
POLICY_V2 = POLICY_V1 + """
[[partners]]
id = "age-partner"
purpose = "age_verification"
hosts = ["pseudo.test"]
[partners.headers]
X-Subscriber-Pseudonym = "pseudonym"
"""


def test_policy_truncated_mid_write_during_reload(tmp_path: Path, origin: Origin) -> None:
    policy = tmp_path / "partners.toml"
    policy.write_text(POLICY_V1)
    gw = start_gateway(tmp_path / "gw", origin.port, partners="",
                       extra=f'[policy]\nfile = "{policy}"\n')
    try:
        assert IDENTITY in get(gw.proxy_port, "http://partner.test/v1")[1]
        results: Counter[str] = Counter()
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                status, body = get(gw.proxy_port, "http://partner.test/during")
                results["partner-ok" if status == 200 and IDENTITY in body else
                        f"partner-{status}-{IDENTITY in body}"] += 1
                status, body = get(gw.proxy_port, "http://other.test/during")
                results["other-ok" if status == 200 and MSISDN_1.encode() not in body else
                        "other-LEAK"] += 1

        thread = threading.Thread(target=traffic)
        thread.start()
        data = POLICY_V2.encode()
        rng = random.Random(5)
        try:
            for _ in range(30):  # a writer that truncates, writes part, and is caught there
                cut = rng.randrange(1, len(data))
                with policy.open("wb") as f:  # not atomic: truncate, then a partial write
                    f.write(data[:cut])
                    f.flush()
                    os.kill(gw.pid, signal.SIGHUP)
                    time.sleep(0.05)
                    f.write(data[cut:])
                time.sleep(0.02)
            policy.write_text(POLICY_V1[: len(POLICY_V1) // 2])  # left broken
            os.kill(gw.pid, signal.SIGHUP)
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join(20)
        assert results["other-LEAK"] == 0
        bad = {k: v for k, v in results.items() if k not in ("partner-ok", "other-ok")}
        assert bad == {}, results  # the good policy kept serving throughout
        assert IDENTITY in get(gw.proxy_port, "http://partner.test/kept")[1]
        text = metrics(gw)
        assert metric_sum(text, "linewarden_policy_reloads", result="refused") >= 1
        policy.write_text(POLICY_V2)  # the fault ends: a whole file and a reload
        os.kill(gw.pid, signal.SIGHUP)
        assert wait_for(lambda: b"X-Subscriber-Pseudonym" in get(
            gw.proxy_port, "http://pseudo.test/v2")[1], timeout=5)
        assert gw.alive() and no_raw_numbers(gw) == []
    finally:
        gw.stop()


@pytest.fixture(autouse=True)
def _loopback_aliases() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.5", 0))
