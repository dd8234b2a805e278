"""Through the real gateway: the ledger row exists for every identity a partner received.

The gateway runs in its own process (the data plane from `linewarden.serve.Service`, with
the ledger from `ledger_from_config` as its recorder), so it can be SIGKILLed mid-load.
Origins record every request they receive and the identity header on it.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from linewarden.claims import subscriber_key
from linewarden.ledger import open_store

from .pg import PrivatePostgres, free_port

LEDGER_KEY = "gateway-test-key"
HOSTS = [f"h{i}.partner.test" for i in range(8)]
CLIENTS = 12  # one subscriber each, on 127.0.0.10, .11, ...
NUMBERS = [f"4474009{i:05d}" for i in range(100, 100 + CLIENTS)]
HEADER = "X-Up-Calling-Line-Id"

# Until `linewarden serve` opens the ledger itself, this launcher does what it will do.
LAUNCHER = """
import asyncio, sys, uvloop
from linewarden.config import load_config
from linewarden.ledger import ledger_from_config
from linewarden.serve import Service

async def main() -> None:
    config = load_config(sys.argv[1])
    ledger = ledger_from_config(config)
    await ledger.start()
    try:
        await Service(config, recorder=ledger).run()
    finally:
        await ledger.close()

uvloop.install()
asyncio.run(main())
"""


class Origin:
    """Records (host, identity header value) for every request; answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").split(":")[0]
                with origin.lock:
                    origin.received.append((host, self.headers.get(HEADER)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def identities(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter((number, host) for host, number in self.received if number)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_config(tmp: Path, origin_port: int, ledger_url: str) -> tuple[Path, int]:
    proxy_port = free_port()
    resolve = "\n".join(f'"{h}" = "127.0.0.1:{origin_port}"' for h in HOSTS)
    bindings = "\n".join(f'[[bindings]]\nip = "127.0.0.{10 + i}"\nmsisdn = "{n}"\n'
                         for i, n in enumerate(NUMBERS))
    hosts = ", ".join(f'"{h}"' for h in HOSTS)
    path = tmp / "linewarden.toml"
    path.write_text(f"""
state_dir = "state"
[proxy]
listen = "127.0.0.1:{proxy_port}"
instance_id = "gw-kill"
[proxy.resolve]
{resolve}
[identity]
pseudonym_secret = "test"
[ledger]
url = "{ledger_url}"
key = "{LEDGER_KEY}"
[web]
listen = "127.0.0.1:{free_port()}"
{bindings}
[[partners]]
id = "billing-co"
purpose = "billing"
hosts = [{hosts}]
allow_raw_msisdn = true
[partners.headers]
{HEADER} = "msisdn"
""")
    return path, proxy_port


def start_gateway(config: Path, proxy_port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(config)],
                            cwd=config.parent, stdout=subprocess.DEVNULL,
                            stderr=open(config.parent / "gateway.log", "wb"))  # noqa: SIM115
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, (config.parent / "gateway.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", proxy_port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("gateway did not start")


def load(proxy_port: int, stop: threading.Event, results: list[int]) -> list[threading.Thread]:
    """CLIENTS keep-alive clients, one per subscriber address, until `stop` or an error."""
    def client(i: int) -> None:
        n = 0
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=5,
                                          source_address=(f"127.0.0.{10 + i}", 0))
        try:
            while not stop.is_set():
                host = HOSTS[(i + n) % len(HOSTS)]
                conn.request("GET", f"http://{host}/r/{i}/{n}")
                response = conn.getresponse()
                response.read()
                results.append(response.status)
                n += 1
        except (OSError, http.client.HTTPException):
            pass  # the gateway was killed
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    return threads


def ledger_counts(url: str, base: Path) -> Counter[tuple[str, str]]:
    keys = {subscriber_key(LEDGER_KEY.encode(), n): n for n in NUMBERS}
    store = open_store(url, base=base).open()
    rows = store.query("SELECT subscriber_key, host, COUNT(*) FROM disclosures "
                       "GROUP BY subscriber_key, host")
    store.close()
    return Counter({(keys[bytes(k).hex()], h): int(c) for k, h, c in rows})


def test_sigkill_under_load_loses_no_row_of_a_disclosure(tmp_path: Path) -> None:
    origin = Origin()
    url = "sqlite:///state/ledger.db"
    config, proxy_port = write_config(tmp_path, origin.port, url)
    gateway = start_gateway(config, proxy_port)
    stop, statuses = threading.Event(), []
    try:
        threads = load(proxy_port, stop, statuses)
        time.sleep(1.5)
        os.kill(gateway.pid, signal.SIGKILL)  # mid-load, no chance to flush
        gateway.wait(5)
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        stop.set()
        if gateway.poll() is None:
            gateway.kill()
        origin.close()
    received = origin.identities()
    assert sum(received.values()) > 100, "the load never reached the partner"
    recorded = ledger_counts(url, tmp_path)
    missing = {k: n - recorded[k] for k, n in received.items() if recorded[k] < n}
    assert missing == {}, f"identities received without a ledger row: {missing}"
    # The ledger may hold a few more (committed, then killed before forwarding).
    assert sum(recorded.values()) - sum(received.values()) <= 2 * 1_000
    # And the chain left by a killed writer still verifies.
    from click.testing import CliRunner

    from .test_cli import root
    result = CliRunner().invoke(root, ["audit", "verify", "--config", str(config)])
    assert result.exit_code == 0, result.output


def test_ledger_down_partner_gets_no_identity_traffic_flows(tmp_path: Path) -> None:
    origin = Origin()
    with PrivatePostgres() as pg:
        url = pg.url()
        config, proxy_port = write_config(tmp_path, origin.port, url)
        gateway = start_gateway(config, proxy_port)
        try:
            def fetch(i: int) -> tuple[int, float]:
                conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10,
                                                  source_address=("127.0.0.10", 0))
                t = time.perf_counter()
                conn.request("GET", f"http://{HOSTS[i % len(HOSTS)]}/x/{i}")
                response = conn.getresponse()
                response.read()
                conn.close()
                return response.status, time.perf_counter() - t

            assert fetch(0)[0] == 200
            assert origin.identities()[(NUMBERS[0], HOSTS[0])] == 1  # enriched while up
            before = len(origin.received)
            pg.stop()
            results = [fetch(i) for i in range(1, 41)]
            assert all(status == 200 for status, _ in results)  # traffic still flows
            assert len(origin.received) == before + 40
            assert all(value is None for _, value in origin.received[before:]), \
                "identity reached a partner while the ledger was down"
            assert max(elapsed for _, elapsed in results[1:]) < 1.0  # no long stalls
        finally:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(10)
            except subprocess.TimeoutExpired:
                gateway.kill()
            origin.close()


@pytest.fixture(autouse=True)
def _loopback_aliases() -> None:
    """127.0.0.0/8 is all loopback on Linux; check the client addresses bind."""
    with socket.socket() as s:
        s.bind((f"127.0.0.{10 + CLIENTS - 1}", 0))
