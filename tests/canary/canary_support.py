"""Support for the canary and kill-switch tests: a private redis-server, `linewarden serve`
subprocesses with a canary, and a plain-socket client that goes through the proxy from a
chosen source address (so each test picks which subscriber it is)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bindings.redis_server import RedisServer
from lwtest import admin_http, admin_json, admin_metrics, admin_socket, launch_serve
from lwtest import stop_process as stop_pid

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"

SUBSCRIBER_IP, SUBSCRIBER_MSISDN = "127.0.0.1", "447400900123"
PROBE_IP, PROBE_MSISDN = "127.0.0.9", "447400900999"
PARTNER_HOST = "partner.test"  # a raw-number partner whose host resolves to the checker
PLAIN_HOST = "plain.test"  # a non-partner host that also resolves to the checker
IDENTITY_HEADER = "X-Up-Calling-Line-Id"

START_TIMEOUT = 30.0


# ---------------------------------------------------------------- redis-server

def start_redis(directory: Path) -> RedisServer:
    return RedisServer(directory).start()


# ---------------------------------------------------------------- gateways

@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    proxy_port: int
    web_port: int
    directory: Path
    config: Path

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def stop(self) -> None:
        stop_pid(self.proc)

    def stderr(self) -> str:
        return (self.directory / "stderr.log").read_text(errors="replace")

    @property
    def admin_socket(self) -> Path:
        return admin_socket(self.directory / "state")

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None
              ) -> dict[str, Any]:
        """A 2xx admin call on the gateway's admin socket (AssertionError otherwise)."""
        return admin_json(self.admin_socket, method, path, body)

    def admin_status(self, method: str, path: str, body: object = None) -> int:
        """The HTTP status of one admin call (for the refusals)."""
        return admin_http(self.admin_socket, method, path, body)[0]

    def metrics(self) -> str:
        return admin_metrics(self.admin_socket)

    def received(self, host: str, source_ip: str = SUBSCRIBER_IP) -> dict[str, str]:
        """The headers the checker behind `host` received from us through the proxy."""
        return received_via(self.proxy_port, host, source_ip)


def gateway_config(directory: Path, proxy_port: int, web_port: int, *, canary: str = "",
                   store_url: str = "memory://", instance: str = "gw") -> str:
    checker = f"127.0.0.1:{web_port}"
    return f"""
state_dir = "{directory / 'state'}"

[proxy]
listen = "127.0.0.1:{proxy_port}"
instance_id = "{instance}"

[proxy.resolve]
"{PARTNER_HOST}" = "{checker}"
"{PLAIN_HOST}" = "{checker}"

[identity]
operator = "234-10"
pseudonym_secret = "canary-tests-pseudonym-secret"

[[bindings]]
ip = "{SUBSCRIBER_IP}"
msisdn = "{SUBSCRIBER_MSISDN}"

[ledger]
url = "sqlite:///{directory / 'ledger.db'}"
key = "canary-tests-ledger-key"

[signing]
key_dir = "{directory.parent / 'signing'}"  # instances on one Redis share their secrets

[store]
url = "{store_url}"

[web]
listen = "{checker}"

{canary}

[[partners]]
id = "billing"
purpose = "billing"
hosts = ["{PARTNER_HOST}"]
allow_raw_msisdn = true
[partners.headers]
{IDENTITY_HEADER} = "msisdn"
"""


def start_gateway(directory: Path, *, canary: str = "", store_url: str = "memory://",
                  instance: str = "gw", env: dict[str, str] | None = None) -> Gateway:
    """`linewarden serve` in `directory`, waited for until its banner names the proxy."""
    def write(proxy_port: int, web_port: int) -> Path:
        config = directory / "linewarden.toml"
        config.write_text(gateway_config(directory, proxy_port, web_port, canary=canary,
                                         store_url=store_url, instance=instance))
        return config

    proc, proxy_port, web_port, config = launch_serve(directory, write, env=env or {},
                                                      timeout=START_TIMEOUT)
    return Gateway(proc, proxy_port, web_port, directory, config)


def received_via(proxy_port: int, host: str, source_ip: str = SUBSCRIBER_IP,
                 timeout: float = 5.0) -> dict[str, str]:
    """GET http://host/api/check through the proxy from `source_ip`; the checker's view of
    our request headers (lower-cased names). A plain socket: nothing adds headers."""
    request = (f"GET http://{host}/api/check HTTP/1.1\r\nHost: {host}\r\n"
               "Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout,
                                  source_address=(source_ip, 0)) as sock:
        sock.sendall(request)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    doc = json.loads(body)
    return {h["name"].lower(): h["value"] for h in doc["headers"]}


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def wait_for(predicate: Any, timeout: float, step: float = 0.005) -> float:
    """Seconds until `predicate()` was true (polled every `step`); fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")
