"""Issue 16 §4: SIGTERM drains. The listening socket closes, requests already in flight
finish (with their ledger rows), what outlives `[proxy] drain_timeout` is cut, and a second
signal exits at once. A real `linewarden serve` and the echo origin's slow paths
(`/upload?pause=S` reads the body only after S seconds; `/hang` never answers)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from fault_support import get, metric_sum, metrics, no_raw_numbers, wait_for
from wire import RawClient

from linewarden.claims import subscriber_key
from linewarden.ledger import open_store
from lwtest import MSISDN_1, Gateway, Origin, pattern_sha256, start_gateway

IN_FLIGHT = 6
BODY = 64 * 1024
PAUSE = 2.0


def ledger_rows(gw: Gateway) -> int:
    store = open_store(f"sqlite:///{gw.directory}/state/ledger.db").open()
    try:
        rows = store.query("SELECT COUNT(*) FROM disclosures WHERE subscriber_key = ?",
                           (bytes.fromhex(subscriber_key(b"test-ledger-key", MSISDN_1)),))
    finally:
        store.close()
    return int(rows[0][0])


def upload(gw: Gateway, path: str, results: list[tuple[int, bytes]]) -> None:
    from lwtest import BLOCK

    try:
        with RawClient(gw.proxy_port, timeout=30) as client:
            client.send(f"POST http://partner.test{path} HTTP/1.1\r\nHost: partner.test\r\n"
                        f"Content-Length: {BODY}\r\n\r\n".encode() + BLOCK[:BODY])
            resp = client.response()
            results.append((resp.status, resp.body))
    except (OSError, EOFError) as exc:
        results.append((0, repr(exc).encode()))


def wait_exit(gw: Gateway, timeout: float) -> int | None:
    try:
        return gw.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def test_sigterm_lets_requests_in_flight_finish_with_their_ledger_rows(
        tmp_path: Path, origin: Origin) -> None:
    gw = start_gateway(tmp_path, origin.port, proxy_extra="drain_timeout = 30")
    try:
        assert get(gw.proxy_port, "http://partner.test/warm")[0] == 200
        rows_before = ledger_rows(gw)
        results: list[tuple[int, bytes]] = []
        marker = f"/upload/drain-{tmp_path.name}"
        threads = [threading.Thread(target=upload,
                                    args=(gw, f"{marker}/{i}?pause={PAUSE}", results))
                   for i in range(IN_FLIGHT)]
        for thread in threads:
            thread.start()
        # In flight: every client is connected; its request reaches the origin (which
        # then sleeps PAUSE s before reading the body) a few milliseconds later.
        assert wait_for(lambda: metric_sum(metrics(gw), "linewarden_client_connections")
                        >= IN_FLIGHT, timeout=10)
        time.sleep(0.3)
        assert not [r for r in origin.requests if marker in r.target]  # none answered yet
        os.kill(gw.pid, signal.SIGTERM)
        assert wait_for(lambda: "requests in flight" in gw.log(), timeout=PAUSE)
        # No longer accepting: a new connection is refused while the uploads still run.
        assert get(gw.proxy_port, "http://partner.test/late")[0] == 0
        assert not [r for r in origin.requests if marker in r.target]
        for thread in threads:
            thread.join(30)
        assert wait_exit(gw, 30) == 0
        expected = f"{BODY} {pattern_sha256(BODY)}\n".encode()
        assert [status for status, _ in results] == [200] * IN_FLIGHT, results
        assert all(body == expected for _, body in results)
        got = [r for r in origin.requests if marker in r.target]
        assert len(got) == IN_FLIGHT
        assert all(r.values("X-Up-Calling-Line-Id") == [MSISDN_1] for r in got)
        assert ledger_rows(gw) >= rows_before + IN_FLIGHT  # each disclosure has its row
        log = gw.log()
        assert f"{IN_FLIGHT} requests in flight" in log
        assert f"drained: {IN_FLIGHT} requests finished, 0 cut" in log, log
        assert "started: worker 0 of 1, proxy 127.0.0.1:" in log, log
        assert "SIGTERM received: stopping" in log, log
        assert "stopped" in log
        assert no_raw_numbers(gw) == []
    finally:
        gw.stop()


def test_drain_timeout_cuts_what_outlives_it(tmp_path: Path, origin: Origin) -> None:
    gw = start_gateway(tmp_path, origin.port, proxy_extra="drain_timeout = 1")
    try:
        results: list[tuple[int, bytes]] = []
        thread = threading.Thread(target=lambda: results.append(
            get(gw.proxy_port, "http://partner.test/hang/drain", timeout=30)))
        thread.start()
        assert wait_for(lambda: any(r.target.startswith("/hang/drain")
                                    for r in origin.requests), timeout=10)
        os.kill(gw.pid, signal.SIGTERM)
        assert wait_exit(gw, 20) == 0
        thread.join(10)
        assert results == [(0, b"")]  # cut: no made-up answer
        assert "drained: 0 requests finished, 1 cut" in gw.log()
    finally:
        gw.stop()


def test_a_second_signal_exits_at_once(tmp_path: Path, origin: Origin) -> None:
    gw = start_gateway(tmp_path, origin.port, proxy_extra="drain_timeout = 600")
    try:
        thread = threading.Thread(target=lambda: get(
            gw.proxy_port, "http://partner.test/hang/twice", timeout=30))
        thread.start()
        assert wait_for(lambda: any(r.target.startswith("/hang/twice")
                                    for r in origin.requests), timeout=10)
        os.kill(gw.pid, signal.SIGTERM)
        assert wait_for(lambda: "requests in flight" in gw.log(), timeout=10)
        assert wait_exit(gw, 1) is None  # draining: it waits for the hung request
        os.kill(gw.pid, signal.SIGINT)
        assert wait_exit(gw, 10) == 128 + signal.SIGINT  # not the 600 s drain
        thread.join(10)
        assert "SIGINT again: exiting now" in gw.log()
    finally:
        gw.stop()
