"""End-to-end helpers: an echo origin, a `linewarden serve` subprocess with [radius], the
real FreeRADIUS `radclient`, and curl from a chosen loopback address."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from redis_server import free_port

from lwtest import admin_metrics, admin_socket

ROOT = Path(__file__).resolve().parents[2]
LINEWARDEN = ROOT / ".venv" / "bin" / "linewarden"
RADCLIENT = shutil.which("radclient") or "/usr/bin/radclient"
SECRET = "s3cret-for-tests"
MSISDN_A, MSISDN_B = "447400900123", "447400900456"
START_TIMEOUT = 30.0
HEADER = "x-up-calling-line-id"


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class EchoOrigin:
    """Answers every GET with the request headers it received, as JSON."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PARTNERS = """
[[partners]]
id = "billing"
purpose = "billing"
hosts = ["partner.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"
X-Age-Over-18 = "age_over_18"

[[partners]]
id = "agecheck"
purpose = "age_verification"
hosts = ["age.test"]
[partners.headers]
X-Age-Over-18 = "age_over_18"
X-Subscriber-Pseudonym = "pseudonym"
"""


@dataclass
class GatewayProcess:
    directory: Path
    proxy_port: int
    web_port: int
    radius_port: int
    config: Path
    proc: subprocess.Popen[str]
    banner: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    # ---- talking to it

    def curl(self, client_ip: str, host: str = "partner.test") -> dict[str, str]:
        """GET http://host/ through the proxy from `client_ip`: the headers the origin got."""
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "5", "--noproxy", "", "--interface", client_ip,
             "-x", f"http://127.0.0.1:{self.proxy_port}", f"http://{host}/"],
            capture_output=True, text=True, timeout=10, check=True)
        doc: dict[str, str] = json.loads(out.stdout)
        return doc

    def identity(self, client_ip: str, host: str = "partner.test") -> str | None:
        return self.curl(client_ip, host).get(HEADER)

    def metrics(self) -> str:
        return admin_metrics(admin_socket(self.directory / "state"))

    def metric(self, name: str, label: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(name) and f'"{label}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def accounting(self, status: str, ip: str = "", msisdn: str = MSISDN_A,
                   session: str = "s1", nas: str = "10.0.0.1", secret: str = SECRET,
                   timeout: float = 2.0, retries: int = 1) -> bool:
        return radclient(self.radius_port, secret, accounting_attributes(
            status, ip, msisdn, session, nas), timeout=timeout, retries=retries)


def accounting_attributes(status: str, ip: str = "", msisdn: str = MSISDN_A,
                          session: str = "s1", nas: str = "10.0.0.1") -> str:
    lines = [f"Acct-Status-Type = {status}", f"NAS-IP-Address = {nas}"]
    if ip:
        lines += [f"Framed-IP-Address = {ip}", f'Acct-Session-Id = "{session}"',
                  f'Calling-Station-Id = "{msisdn}"', '3GPP-IMSI = "234100000000001"',
                  '3GPP-IMSI-MCC-MNC = "23410"', "3GPP-RAT-Type = 6",
                  'Called-Station-Id = "internet"']
    return "\n".join(lines) + "\n"


def radclient(port: int, secret: str, attributes: str, *, timeout: float = 2.0,
              retries: int = 1) -> bool:
    """One Accounting-Request with FreeRADIUS radclient; True if it was answered."""
    done = subprocess.run(
        [RADCLIENT, "-q", "-r", str(retries), "-t", str(timeout), f"127.0.0.1:{port}",
         "acct", secret], input=attributes, capture_output=True, text=True,
        timeout=timeout * (retries + 1) + 10)
    return done.returncode == 0


def write_config(directory: Path, origin_port: int, *, store_url: str = "memory://",
                 radius: bool = True, ttl: float = 60.0, extra: str = "") -> tuple[
                     Path, int, int, int]:
    directory.mkdir(parents=True, exist_ok=True)
    proxy_port, web_port, radius_port = free_port(), free_port(), free_port()
    radius_section = f"""
[radius]
listen = "127.0.0.1:{radius_port}"
secret = "{SECRET}"
interim_interval = 30
ttl = {ttl}
[[radius.clients]]
address = "127.0.0.1"
""" if radius else ""
    # Gateways of one test share secrets (one Redis means one cluster: secrets.py); each
    # test its own key space on the session's Redis.
    text = f"""
state_dir = "{directory / 'state'}"

[proxy]
listen = "127.0.0.1:{proxy_port}"
instance_id = "{directory.name}"

[proxy.resolve]
"partner.test" = "127.0.0.1:{origin_port}"
"age.test" = "127.0.0.1:{origin_port}"
"elsewhere.test" = "127.0.0.1:{origin_port}"

[identity]
operator = "234-10"
pseudonym_secret = "test-pseudonym-secret"

[ledger]
url = "sqlite:///{directory / 'ledger.db'}"
key = "test-ledger-key"

[signing]
key_dir = "{directory.parent / 'signing'}"

[store]
url = "{store_url}"
prefix = "{directory.parent.name}:"

[web]
listen = "127.0.0.1:{web_port}"
{radius_section}
{extra}
{PARTNERS}
"""
    path = directory / "linewarden.toml"
    path.write_text(text)
    return path, proxy_port, web_port, radius_port


def start_gateway(directory: Path, origin_port: int, **options: object) -> GatewayProcess:
    config, proxy_port, web_port, radius_port = write_config(
        directory, origin_port, **options)  # type: ignore[arg-type]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    with open(directory / "stderr.log", "w") as stderr:  # the child keeps its own copy
        proc = subprocess.Popen([str(LINEWARDEN), "serve", "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                                cwd=directory)
    gw = GatewayProcess(directory, proxy_port, web_port, radius_port, config, proc)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        gw.banner.append(line)
        if "proxy" in line and "http://" in line:
            return gw
    gw.stop()
    raise RuntimeError("gateway did not start:\n" + (directory / "stderr.log").read_text())
