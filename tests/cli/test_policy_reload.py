"""A running gateway refuses, on SIGHUP, a policy whose partner header the gateway owns
(issue 15 item 3): the log says why with file:line, and enrichment goes on under the old
policy, with no second framing field on the wire."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from lwtest import LINEWARDEN, MSISDN_1, Gateway, Origin, free_port, gateway_config

POLICY = """
[[partners]]
id = "billing-partner"
purpose = "billing"
hosts = ["partner.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"
{extra}
"""


def through_proxy(gw: Gateway, origin: Origin) -> dict[str, list[str]]:
    """One GET through the proxy; the header values the origin received, by lower name."""
    marker = "m" + uuid.uuid4().hex[:12]
    result = subprocess.run(["curl", "-sS", "--fail", "--max-time", "10", "-x", gw.proxy,
                             f"http://partner.test/{marker}"], capture_output=True, timeout=20,
                            check=False)
    assert result.returncode == 0, result.stderr
    [received] = origin.with_marker(marker)
    return {name.lower(): received.values(name) for name in received.header_names()}


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sighup_refuses_a_reserved_partner_header_and_keeps_the_old_policy(
        gateway_factory: Callable[..., Gateway], origin: Origin, tmp_path: Path) -> None:
    policy = tmp_path / "reserved" / "partners.toml"
    policy.parent.mkdir(parents=True)
    policy.write_text(POLICY.format(extra=""))
    gw = gateway_factory("reserved", extra='[policy]\nfile = "partners.toml"\n', partners="")
    assert through_proxy(gw, origin)["x-up-calling-line-id"] == [MSISDN_1]

    for n, header in enumerate(["Content-Length", "transfer-encoding", "HOST"], 1):
        policy.write_text(POLICY.format(extra=f'{header} = "operator"'))
        os.kill(gw.pid, signal.SIGHUP)
        assert wait_for(lambda n=n: gw.log().count("policy reload refused") == n), gw.log()
        log = gw.log()
        assert f"partners.toml:9: partner 'billing-partner': error: header name '{header}' " \
               "is reserved" in log
        seen = through_proxy(gw, origin)
        assert seen["x-up-calling-line-id"] == [MSISDN_1]  # the old policy still enriches
        assert "content-length" not in seen and "transfer-encoding" not in seen
        assert seen["host"] == ["partner.test"]  # one Host, the client's
        assert "234-10" not in str(seen)  # the operator claim went nowhere
    assert gw.alive()


def test_serve_refuses_to_start_with_a_reserved_partner_header(tmp_path: Path,
                                                               origin: Origin) -> None:
    config = tmp_path / "linewarden.toml"
    config.write_text(gateway_config(tmp_path, origin.port, proxy_port=free_port(),
                                     web_port=free_port(),
                                     partners=POLICY.format(extra='Cookie = "operator"')))
    result = subprocess.run([str(LINEWARDEN), "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "header name 'Cookie' is reserved" in result.stderr
    assert f"{config}:" in result.stderr and "partner 'billing-partner'" in result.stderr
    assert "Traceback" not in result.stderr
