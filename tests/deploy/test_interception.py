"""Transparent interception for real: a subscriber namespace runs plain `curl
http://partner.test/` (no proxy configured), an nftables REDIRECT in the gateway namespace
hands the connection to `[proxy] mode = "intercept"`, and origins in a third namespace see
what arrived. Skips only with the kernel's own refusal message."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import KernelRefused, Lab, run
from wire import marker

from lwtest import DEFAULT_PARTNERS, LINEWARDEN, MSISDN_1, admin_metrics, stop_process

HERE = Path(__file__).resolve().parent
FORGED = "447400900999"
NFT_RULES = """
table ip6 lwtest6 {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "lwg%(s)s" tcp dport 80 redirect to :3131
  }
}
table ip lwtest {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "lwg%(s)s" tcp dport 80 redirect to :3129
  }
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr 127.0.0.2 tcp dport 80 redirect to :3129
  }
}
"""
TPROXY_RULES = """
table ip lwtproxy {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    iifname "lwg%(s)s" tcp dport 81 tproxy to :3130 meta mark set 1 accept
  }
}
"""


def gateway_config(directory: Path, mode: str, listen: str, web: int,
                   origin: str = "10.99.2.2") -> str:
    return f"""
state_dir = "{directory}/state"
[proxy]
listen = "{listen}"
mode = "{mode}"
instance_id = "{directory.name}-test"
[proxy.resolve]
"partner.test" = "{origin}"
"other.test" = "{origin}"
[identity]
operator = "234-10"
pseudonym_secret = "test-pseudonym-secret"
[[bindings]]
ip = "10.99.1.2"
msisdn = "{MSISDN_1}"
[[bindings]]
ip = "127.0.0.1"
msisdn = "{MSISDN_1}"
[[bindings]]
ip = "fd99:1::2"
msisdn = "{MSISDN_1}"
[ledger]
url = "sqlite:///{directory}/state/ledger.db"
key = "test-ledger-key"
[web]
listen = "127.0.0.1:{web}"
{DEFAULT_PARTNERS}
"""


class Net:
    def __init__(self, lab: Lab, directory: Path) -> None:
        self.lab, self.directory = lab, directory
        self.log = directory / "origins.jsonl"
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, ns: str, *cmd: str, ready: str, name: str) -> subprocess.Popen[bytes]:
        out = self.directory / f"{name}.out"
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], cwd=self.directory,
                                stdout=out.open("wb"),
                                stderr=(self.directory / f"{name}.err").open("wb"))
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while ready not in out.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = (self.directory / f"{name}.err").read_text(errors="replace")
                raise AssertionError(f"{name} did not start: {err}")
            time.sleep(0.05)
        return proc

    def seen(self, m: str) -> list[dict[str, str]]:
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [e for e in lines if m in e["head"]]

    def curl(self, url: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run("curl", "-sS", "--max-time", "15", *args, url, ns=self.lab.sub, check=False)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    lab = Lab()
    directory = tmp_path_factory.mktemp("intercept")
    n = Net(lab, directory)
    try:
        try:
            lab.build()
            lab.nft(NFT_RULES % {"s": lab.suffix})
            # TPROXY (port 81): marked packets are delivered locally, to the transparent
            # listener (kernel docs, networking/tproxy.rst).
            lab.nft(TPROXY_RULES % {"s": lab.suffix})
            run("ip", "rule", "add", "fwmark", "1", "lookup", "100", ns=lab.gw)
            run("ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100",
                ns=lab.gw)
        except KernelRefused as exc:
            if not exc.by_kernel():
                raise  # our ruleset or command is wrong: a failure, not a skip
            pytest.skip(f"the kernel refused the namespace lab: {exc}")
        for host, port in (("10.99.2.2", "80"), ("10.99.2.3", "80"), ("10.99.2.2", "81"),
                           ("fd99:2::2", "80")):
            n.spawn(lab.org, sys.executable, str(HERE / "echo_origin.py"), host, port,
                    str(n.log), ready="ready", name=f"origin-{host}-{port}")
        # A service on the gateway host's loopback: interception must not reach it.
        n.spawn(lab.gw, sys.executable, str(HERE / "echo_origin.py"), "127.0.0.2", "80",
                str(n.log), ready="ready", name="loopback-service")
        for name, mode, listen, web, origin in (
                ("intercept", "intercept", "0.0.0.0:3129", 8080, "10.99.2.2"),
                ("tproxy", "tproxy", "0.0.0.0:3130", 8081, "10.99.2.2"),
                ("intercept6", "intercept", "[::]:3131", 8082, "fd99:2::2")):
            config = directory / name / "linewarden.toml"
            config.parent.mkdir()
            config.write_text(gateway_config(directory / name, mode, listen, web, origin))
            n.spawn(lab.gw, str(LINEWARDEN), "serve", "--config", str(config), ready="proxy",
                    name=f"gateway-{name}")
        yield n
    finally:
        for proc in reversed(n.procs):
            stop_process(proc)
        lab.destroy()


def head_of(net: Net, m: str, at: str) -> str:
    found = net.seen(m)
    assert [e["at"] for e in found] == [at], found
    head = found[0]["head"].lower()
    assert FORGED not in head  # the forged copy never arrives
    return head


def test_partner_enriched_without_proxy_settings(net: Net) -> None:
    m = marker()
    result = net.curl(f"http://partner.test/{m}", "--resolve", "partner.test:80:10.99.2.2",
                      "-H", f"X-MSISDN: {FORGED}", "-H", f"X_Up_Calling_Line_Id: {FORGED}")
    assert result.returncode == 0, result.stderr
    head = head_of(net, m, "10.99.2.2:80")
    assert f"x-up-calling-line-id: {MSISDN_1}" in head
    assert "host: partner.test" in head


def test_other_host_not_enriched(net: Net) -> None:
    m = marker()
    result = net.curl(f"http://other.test/{m}", "--resolve", "other.test:80:10.99.2.2",
                      "-H", f"X-MSISDN: {FORGED}")
    assert result.returncode == 0, result.stderr
    head = head_of(net, m, "10.99.2.2:80")
    assert "x-up-calling-line-id" not in head and MSISDN_1 not in head


def test_host_that_resolves_elsewhere_is_forwarded_without_identity(net: Net) -> None:
    """Host says partner.test, the subscriber connected to 10.99.2.3: the request goes where
    it was going, with no number (withheld host_mismatch)."""
    m = marker()
    result = net.curl(f"http://partner.test/{m}", "--resolve", "partner.test:80:10.99.2.3")
    assert result.returncode == 0, result.stderr
    head = head_of(net, m, "10.99.2.3:80")
    assert "x-up-calling-line-id" not in head and MSISDN_1 not in head
    metrics = admin_metrics(net.directory / "intercept" / "state" / "admin.sock")
    assert 'linewarden_withheld_disclosures_total{reason="host_mismatch"}' in metrics
    assert 'linewarden_intercepted_requests_total{result="host-mismatch"}' in metrics


def test_direct_connection_to_the_listener_reaches_nothing(net: Net) -> None:
    """No REDIRECT (port 3129): the original destination is the listener itself, which the
    destination policy refuses (the gateway's own listener, found after connect)."""
    m = marker()
    result = net.curl(f"http://10.99.1.1:3129/{m}", "-i", "-H", "Host: partner.test")
    assert result.stdout.startswith("HTTP/1.1 403"), (result.stdout, result.stderr)
    assert net.seen(m) == []


def test_redirected_loopback_destination_is_refused(net: Net) -> None:
    """An OUTPUT redirect on the gateway host sends a local client's request for 127.0.0.2
    to the gateway: the original destination is loopback, refused with 403; the loopback
    service never sees it."""
    m = marker()
    result = run("curl", "-sS", "-i", "--max-time", "15", f"http://127.0.0.2/{m}",
                 ns=net.lab.gw, check=False)
    assert result.stdout.startswith("HTTP/1.1 403"), (result.stdout, result.stderr)
    assert net.seen(m) == []
    metrics = admin_metrics(net.directory / "intercept" / "state" / "admin.sock")
    assert 'linewarden_refused_destinations_total{reason="loopback"}' in metrics


def test_disclosure_is_in_the_ledger(net: Net) -> None:
    result = subprocess.run([str(LINEWARDEN), "audit", "subscriber", MSISDN_1, "--json",
                             "--config", str(net.directory / "intercept" / "linewarden.toml")],
                            capture_output=True, text=True, cwd=net.directory, check=False)
    assert result.returncode == 0, result.stderr
    assert "billing-partner" in result.stdout and "partner.test" in result.stdout


def test_tproxy_partner_enriched_other_not(net: Net) -> None:
    """mode = "tproxy": the TPROXY rule delivers port-81 connections unchanged to the
    IP_TRANSPARENT listener; the accepted socket's local address is the destination."""
    m = marker()
    result = net.curl(f"http://partner.test:81/{m}", "--resolve", "partner.test:81:10.99.2.2",
                      "-H", f"X-MSISDN: {FORGED}")
    assert result.returncode == 0, result.stderr
    assert f"x-up-calling-line-id: {MSISDN_1}" in head_of(net, m, "10.99.2.2:81")
    m = marker()
    result = net.curl(f"http://other.test:81/{m}", "--resolve", "other.test:81:10.99.2.2")
    assert result.returncode == 0, result.stderr
    assert "x-up-calling-line-id" not in head_of(net, m, "10.99.2.2:81")
    metrics = admin_metrics(net.directory / "tproxy" / "state" / "admin.sock")
    assert 'linewarden_disclosures_total{claim="msisdn",partner="billing-partner"} 1.0' \
        in metrics


def test_ipv6_intercept_reads_the_original_destination(net: Net) -> None:
    """IP6T_SO_ORIGINAL_DST: an nftables ip6 REDIRECT to a [::] listener."""
    m = marker()
    result = net.curl(f"http://partner.test/{m}", "--resolve", "partner.test:80:[fd99:2::2]",
                      "-H", f"X-MSISDN: {FORGED}")
    assert result.returncode == 0, result.stderr
    assert f"x-up-calling-line-id: {MSISDN_1}" in head_of(net, m, "fd99:2::2:80")
    m = marker()
    result = net.curl(f"http://other.test/{m}", "--resolve", "other.test:80:[fd99:2::2]")
    assert result.returncode == 0, result.stderr
    assert "x-up-calling-line-id" not in head_of(net, m, "fd99:2::2:80")
    metrics = admin_metrics(net.directory / "intercept6" / "state" / "admin.sock")
    assert 'linewarden_intercepted_requests_total{result="host-matches"} 1.0' in metrics
