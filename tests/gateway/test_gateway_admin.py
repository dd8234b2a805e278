"""Admin API (bindings, reload) on its own listener, SIGHUP reload, and `linewarden serve`
refusing bad configs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from wire import curl, curl_ok, exchange, marker, wait_until

from lwtest import (
    LINEWARDEN,
    MSISDN_1,
    Gateway,
    Origin,
    admin_http,
    admin_metrics,
    free_port,
    gateway_config,
)

NEW_MSISDN = "447400900789"


def admin(gw: Gateway, method: str, path: str, body: object = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One call on the gateway's admin socket."""
    return admin_http(gw.admin_socket, method, path, body, headers)


def identity_for(gw: Gateway, origin: Origin, host: str = "partner.test",
                 interface: str | None = None) -> list[str]:
    m = marker()
    curl_ok(gw.proxy, f"http://{host}/{m}", interface=interface)
    [rec] = origin.with_marker(m)
    return rec.values("X-Up-Calling-Line-Id")


def test_admin_bindings_post_and_delete(gateway: Gateway, origin: Origin) -> None:
    assert identity_for(gateway, origin, interface="127.0.0.3") == []
    status, body = admin(gateway, "POST", "/admin/bindings",
                         {"ip": "127.0.0.3", "msisdn": "+" + NEW_MSISDN})
    assert status == 201
    assert NEW_MSISDN.encode() not in body  # acknowledged by IP only
    assert identity_for(gateway, origin, interface="127.0.0.3") == [NEW_MSISDN]
    assert identity_for(gateway, origin) == [MSISDN_1]  # others unaffected
    status, _ = admin(gateway, "DELETE", "/admin/bindings/127.0.0.3")
    assert status == 204
    assert identity_for(gateway, origin, interface="127.0.0.3") == []
    status, _ = admin(gateway, "DELETE", "/admin/bindings/127.0.0.3")
    assert status == 404


def test_admin_delete_by_query(gateway: Gateway, origin: Origin) -> None:
    assert admin(gateway, "POST", "/admin/bindings",
                 {"ip": "127.0.0.4", "msisdn": NEW_MSISDN})[0] == 201
    assert admin(gateway, "DELETE", "/admin/bindings?ip=127.0.0.4")[0] == 204
    assert identity_for(gateway, origin, interface="127.0.0.4") == []


@pytest.mark.parametrize("body", [
    {"ip": "not-an-ip", "msisdn": NEW_MSISDN},
    {"ip": "127.0.0.5", "msisdn": "12"},
    {"ip": "127.0.0.5", "msisdn": "44740090078x"},
    {"ip": "127.0.0.5", "msisdn": NEW_MSISDN, "attributes": {"a": 1}},
    [1, 2],
])
def test_admin_rejects_bad_bindings(gateway: Gateway, origin: Origin, body: object) -> None:
    status, _out = admin(gateway, "POST", "/admin/bindings", body)
    assert status == 400
    assert identity_for(gateway, origin, interface="127.0.0.5") == []


def test_admin_rejects_malformed_json(gateway: Gateway) -> None:
    assert _raw_post(gateway.admin_socket, b"{") == 400
    assert _raw_post(gateway.admin_socket, b"") == 400  # "{}": no address


def _raw_post(path: Path, body: bytes) -> int:
    """POST a literal body (not JSON-encoded) on the admin socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"POST /admin/bindings HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_admin_and_metrics_are_not_on_the_public_port(gateway: Gateway, origin: Origin) -> None:
    """The public listener serves pages only: every admin path and /metrics is 404 there,
    whatever the method and from whatever address (no 'loopback is trusted' rule)."""
    for path in ("/metrics", "/admin/bindings", "/admin/bindings/127.0.0.1?reveal=1",
                 "/admin/reload", "/admin/killswitch", "/admin/killswitch/trip",
                 "/admin/canary", "/admin/audit/verify", "/admin/test-faults/leak-everywhere"):
        for method in ("GET", "POST", "DELETE"):
            result = curl(None, f"{gateway.web}{path}", "-X", method, "-o", "/dev/null",
                          "-w", "%{http_code}", "--data-binary",
                          '{"ip": "127.0.0.6", "msisdn": "447400900789"}')
            assert result.stdout == b"404", (method, path)
    assert identity_for(gateway, origin, interface="127.0.0.6") == []
    # The public pages are still there.
    assert curl_ok(None, f"{gateway.web}/healthz") == b"ok\n"
    assert b"identity_revealed" in curl_ok(None, f"{gateway.web}/api/check")


def test_admin_socket_is_0600_and_answers_the_cli_only_there(gateway: Gateway) -> None:
    mode = os.stat(gateway.admin_socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert "linewarden_requests_total" in gateway.metrics()


TOKEN = "s3cret-admin-token-0123456789"


def test_admin_over_tcp_needs_the_token(gateway_factory, origin: Origin) -> None:
    # Not 127.0.0.1: the test config maps "tls.test" to 127.0.0.1 without a port, which
    # config.py refuses when the admin listener is on that address (any port reachable).
    port = free_port("127.0.0.3")
    gw = gateway_factory(admin_extra=f'listen = "127.0.0.3:{port}"\nadmin_token = "{TOKEN}"')
    where = f"127.0.0.3:{port}"
    body = {"ip": "127.0.0.7", "msisdn": NEW_MSISDN}
    assert not gw.admin_socket.exists()  # TCP instead of the socket, not beside it
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"}):
        status, answer = admin_http(where, "POST", "/admin/bindings", body, headers)
        assert status == 401, headers
        assert TOKEN.encode() not in answer
        assert admin_http(where, "GET", "/metrics", headers=headers)[0] == 401
        assert admin_http(where, "POST", "/admin/reload", headers=headers)[0] == 401
        assert admin_http(where, "POST", "/admin/killswitch/trip", {}, headers)[0] == 401
    assert identity_for(gw, origin, interface="127.0.0.7") == []
    # Through the proxy, even with the token, the admin listener is no destination.
    for request in (f"GET http://{where}/metrics HTTP/1.1\r\nHost: {where}\r\n"
                    f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n",
                    f"GET /metrics HTTP/1.1\r\nHost: {where}\r\n"
                    f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"):
        data, _ = exchange(gw.proxy_port, request.encode(), source="127.0.0.5")
        assert data.startswith(b"HTTP/1.1 403 ") and b"linewarden_" not in data, data[:200]
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert admin_http(where, "POST", "/admin/bindings", body, good)[0] == 201
    assert identity_for(gw, origin, interface="127.0.0.7") == [NEW_MSISDN]
    assert "linewarden_requests_total" in admin_metrics(where, good)
    # The CLI reads the token from the same config.
    done = subprocess.run([str(LINEWARDEN), "bindings", "show", "127.0.0.7", "--config",
                           str(gw.config_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "*********789" in done.stdout and NEW_MSISDN not in done.stdout


PARTNER_ON = """
[[partners]]
id = "billing-partner"
purpose = "billing"
hosts = ["{host}"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"
"""

BAD_POLICIES = {
    "catch-all": PARTNER_ON.format(host="*"),
    "public-suffix": PARTNER_ON.format(host="*.co.uk"),
    "corrupt": "[[partners]\nid = ",
    "no-opt-in": PARTNER_ON.format(host="other.test").replace("allow_raw_msisdn = true\n", ""),
    "unknown-key": PARTNER_ON.format(host="other.test") + "colour = 'red'\n",
}


@pytest.fixture
def reloadable(gateway_factory, tmp_path: Path) -> tuple[Gateway, Path]:
    policy = tmp_path / "reload" / "partners.toml"
    policy.parent.mkdir(parents=True)
    policy.write_text(PARTNER_ON.format(host="partner.test"))
    gw = gateway_factory("reload", extra='[policy]\nfile = "partners.toml"\n', partners="")
    return gw, policy


def test_reload_with_bad_policy_is_422_and_old_policy_keeps_working(
        reloadable: tuple[Gateway, Path], origin: Origin) -> None:
    gw, policy = reloadable
    assert identity_for(gw, origin) == [MSISDN_1]
    for name, text in BAD_POLICIES.items():
        policy.write_text(text)
        status, body = admin(gw, "POST", "/admin/reload")
        assert status == 422, name
        error = json.loads(body)["error"]
        assert "partners.toml:" in error, (name, error)  # file:line for the operator
        assert identity_for(gw, origin) == [MSISDN_1], name
        assert identity_for(gw, origin, "evil.test") == [], name
    assert "policy reload refused" in gw.log()
    metrics = gw.metrics()
    assert f'linewarden_policy_reloads_total{{result="refused"}} {len(BAD_POLICIES)}.0' in metrics


def test_reload_with_good_policy_swaps(reloadable: tuple[Gateway, Path],
                                       origin: Origin) -> None:
    gw, policy = reloadable
    policy.write_text(PARTNER_ON.format(host="other.test"))
    status, body = admin(gw, "POST", "/admin/reload")
    assert status == 200 and json.loads(body)["reloaded"] is True
    assert identity_for(gw, origin, "other.test") == [MSISDN_1]
    assert identity_for(gw, origin, "partner.test") == []


def test_sighup_reloads_and_bad_file_on_sighup_is_refused(reloadable: tuple[Gateway, Path],
                                                          origin: Origin) -> None:
    gw, policy = reloadable
    policy.write_text(PARTNER_ON.format(host="other.test"))
    os.kill(gw.pid, signal.SIGHUP)
    assert wait_until(lambda: identity_for(gw, origin, "other.test") == [MSISDN_1])
    assert identity_for(gw, origin, "partner.test") == []
    policy.write_text(BAD_POLICIES["catch-all"])
    os.kill(gw.pid, signal.SIGHUP)
    assert wait_until(lambda: "policy reload refused" in gw.log())
    assert identity_for(gw, origin, "other.test") == [MSISDN_1]
    assert identity_for(gw, origin, "evil.test") == []
    assert gw.alive()


def test_reload_from_main_config_file(gateway_factory, origin: Origin) -> None:
    gw = gateway_factory("main-reload")
    text = gw.config_path.read_text()
    gw.config_path.write_text(text.replace('hosts = ["partner.test"]', 'hosts = ["evil.test"]'))
    assert admin(gw, "POST", "/admin/reload")[0] == 200
    assert identity_for(gw, origin, "evil.test") == [MSISDN_1]
    assert identity_for(gw, origin, "partner.test") == []


def test_metrics_count_strips_and_disclosures(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    curl_ok(gateway.proxy, f"http://partner.test/{m}", "-H", "X_MSISDN: 1", "-H", "X-IMSI: 2")
    metrics = gateway.metrics()
    assert 'linewarden_stripped_headers_total{reason="identity"}' in metrics
    assert 'linewarden_disclosures_total{claim="msisdn",partner="billing-partner"}' in metrics
    assert MSISDN_1 not in metrics
    committed = re.search(r"^linewarden_ledger_rows_committed_total (\S+)$", metrics, re.M)
    commits = re.search(r"^linewarden_ledger_commits_total (\S+)$", metrics, re.M)
    assert committed and commits and float(committed[1]) >= float(commits[1]) >= 1
    assert "linewarden_ledger_healthy 1.0" in metrics
    assert 'linewarden_ledger_records_refused_total{reason="queue_full"} 0.0' in metrics


# ---------------------------------------------------------------- serve refuses bad configs

def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINEWARDEN), "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=30, check=False,
                          cwd=config.parent)


def _valid_config(tmp_path: Path, origin: Origin) -> str:
    return gateway_config(tmp_path, origin.port, proxy_port=free_port(), web_port=free_port())


@pytest.mark.parametrize(("name", "edit", "needle"), [
    ("catch-all", lambda t: t.replace('hosts = ["partner.test"]', 'hosts = ["*"]'),
     "billing-partner"),
    ("public-suffix", lambda t: t.replace('hosts = ["partner.test"]', 'hosts = ["*.co.uk"]'),
     "public suffix"),
    ("unknown-key", lambda t: t.replace("[web]\n", "[web]\ncolour = 1\n"), "colour"),
    ("corrupt", lambda t: t.replace("[web]", "[web"), "invalid TOML"),
    ("bad-binding", lambda t: t.replace('msisdn = "447400900456"', 'msisdn = "12"'), "msisdn"),
    ("bad-listen", lambda t: t.replace('listen = "127.0.0.1:', 'listen = "nowhere', 1),
     "listen"),
    ("bad-claim", lambda t: t.replace('X-Up-Calling-Line-Id = "msisdn"',
                                      'X-Up-Calling-Line-Id = "imsi"'), "unknown claim"),
])
def test_serve_with_bad_config_exits_1_with_file_and_line(tmp_path: Path, origin: Origin,
                                                          name: str, edit, needle: str) -> None:
    config = tmp_path / "linewarden.toml"
    text = _valid_config(tmp_path, origin)
    bad = edit(text)
    assert bad != text
    config.write_text(bad)
    result = _serve(config)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{config}:" in result.stderr  # file:line
    line = int(result.stderr.split(f"{config}:")[1].split(":")[0])
    assert 1 <= line <= len(bad.splitlines())
    assert needle in result.stderr
    assert "447400900456" not in result.stderr  # never echoes a configured number


def test_serve_with_missing_policy_file_exits_1(tmp_path: Path, origin: Origin) -> None:
    config = tmp_path / "linewarden.toml"
    config.write_text(_valid_config(tmp_path, origin).replace(
        "[web]", '[policy]\nfile = "nope.toml"\n\n[web]'))
    result = _serve(config)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "nope.toml" in result.stderr


def test_serve_on_a_busy_port_exits_1(tmp_path: Path, origin: Origin,
                                      gateway: Gateway) -> None:
    config = tmp_path / "linewarden.toml"
    text = _valid_config(tmp_path, origin)
    proxy_line = next(line for line in text.splitlines() if line.startswith("listen"))
    config.write_text(text.replace(proxy_line, f'listen = "127.0.0.1:{gateway.proxy_port}"', 1))
    result = _serve(config)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert gateway.alive()
