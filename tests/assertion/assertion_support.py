"""Test support for assertions: partner apps behind the kit, and a gateway in front of them.

Two partners, each a real HTTP server behind `linewarden.partner`:
- `age-partner` (host age.test): the runnable example app (ASGI, uvicorn) as a subprocess.
- `shop-partner` (host shop.test): a WSGI app in a thread; answers with the claims and,
  test-only, the raw header it received, so tests can replay real assertions.
The gateway is a real `linewarden serve` subprocess whose `[proxy.resolve]` sends both
hosts to those apps on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from linewarden.partner import Claims, JWKSFetcher, ReplayCache, WSGIAssertionMiddleware
from lwtest import MSISDN_1, MSISDN_2, ROOT, free_port, launch_serve, stop_process

HEADER = "X-Operator-Assertion"
START_TIMEOUT = 30.0
# The shared stack's assertion lifetime: short, so the end-to-end expiry test waits seconds.
STACK_TTL = 5

PARTNERS = """
[[partners]]
id = "age-partner"
purpose = "age_verification"
hosts = ["age.test"]
[partners.headers]
X-Operator-Assertion = { claim = "assertion", include = ["age_over_18", "operator"] }

[[partners]]
id = "shop-partner"
purpose = "billing"
hosts = ["shop.test"]
[partners.headers]
X-Operator-Assertion = "assertion"
"""


def wait_port(port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """A direct request (not through the gateway): status and JSON body."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def curl(proxy: str, url: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Through the gateway, with curl: status and JSON body."""
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-x", proxy,
                          "-w", "\n%{http_code}", *args, url],
                         capture_output=True, check=True, timeout=20)
    body, _, status = out.stdout.rpartition(b"\n")
    return int(status), json.loads(body) if body else {}


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()),
                     b64(signature)])


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (json.loads(base64.urlsafe_b64decode(pad(head))),
            json.loads(base64.urlsafe_b64decode(pad(body))))


# ---------------------------------------------------------------- partner apps

class _Threading(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class WsgiPartner:
    """shop-partner: WSGI app behind WSGIAssertionMiddleware, in a thread."""

    server: _Threading
    port: int
    replay: ReplayCache

    @classmethod
    def start(cls, audience: str, jwks_url: str, *, leeway: float = 0.0) -> WsgiPartner:
        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            claims: Claims = environ["linewarden.claims"]
            body = json.dumps({"sub": claims.sub, "aud": claims.aud, "kid": claims.kid,
                               "jti": claims.jti, "payload": dict(claims.payload),
                               "raw": environ.get("HTTP_X_OPERATOR_ASSERTION")}).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]

        replay = ReplayCache()
        wrapped = WSGIAssertionMiddleware(app, audience=audience, jwks=JWKSFetcher(jwks_url),
                                          replay=replay, leeway=leeway)
        server = make_server("127.0.0.1", 0, wrapped, server_class=_Threading,
                             handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return cls(server, server.server_address[1], replay)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class AsgiPartner:
    """age-partner: examples/partner_app.py as a subprocess."""

    proc: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, audience: str, jwks_url: str, directory: Path) -> AsgiPartner:
        port = free_port()
        log = (directory / f"{audience}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "partner_app.py"), "--audience",
             audience, "--jwks", jwks_url, "--listen", f"127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_port(port)
        except AssertionError:
            stop_process(proc)
            raise
        return cls(proc, port)

    def stop(self) -> None:
        stop_process(self.proc)


# ---------------------------------------------------------------- the gateway

@dataclass
class AssertionGateway:
    proc: subprocess.Popen[bytes]
    proxy_port: int
    web_port: int
    directory: Path
    config: Path

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/.well-known/jwks.json"

    @property
    def key_dir(self) -> Path:
        return self.directory / "state" / "signing"

    def log(self) -> str:
        return (self.directory / "stderr.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)


def config_text(directory: Path, *, proxy_port: int, web_port: int, resolve: dict[str, int],
                ttl: int, partners: str = PARTNERS) -> str:
    resolved = "\n".join(f'"{host}" = "127.0.0.1:{port}"' for host, port in resolve.items())
    return f"""
state_dir = "{directory}/state"

[proxy]
listen = "127.0.0.1:{proxy_port}"
instance_id = "assertion-test"

[proxy.resolve]
{resolved}

[identity]
operator = "234-10"
pseudonym_secret = "test-pseudonym-secret"

[signing]
ttl = {ttl}

[[bindings]]
ip = "127.0.0.1"
msisdn = "{MSISDN_1}"
attributes = {{ age_over_18 = "true" }}

[[bindings]]
ip = "127.0.0.2"
msisdn = "{MSISDN_2}"

[ledger]
url = "sqlite:///{directory}/state/ledger.db"
key = "test-ledger-key"

[web]
listen = "127.0.0.1:{web_port}"
{partners}
"""


def start_gateway(directory: Path, resolve: dict[str, int], *, ttl: int = 60,
                  proxy_port: int | None = None, web_port: int | None = None
                  ) -> AssertionGateway:
    """`linewarden serve --config FILE` until its banner names the proxy."""
    def write(pp: int, wp: int) -> Path:
        config = directory / "linewarden.toml"
        config.write_text(config_text(directory, proxy_port=pp, web_port=wp, resolve=resolve,
                                      ttl=ttl))
        return config

    proc, pp, wp, config = launch_serve(directory, write, ports=(proxy_port, web_port),
                                        timeout=START_TIMEOUT)
    return AssertionGateway(proc, pp, wp, directory, config)


@dataclass
class Stack:
    gateway: AssertionGateway
    age: AsgiPartner  # age-partner, the example app; assertion carries age_over_18, operator
    shop: WsgiPartner  # shop-partner, WSGI, leeway 0; assertion carries only sub
