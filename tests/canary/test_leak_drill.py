"""The leak drill: a real gateway with a canary; a fault makes the data plane disclose to a
non-partner; the canary sees it and the kill switch stops every disclosure, fast.

The fault is the test-only hook in `linewarden/testing/leak_drill.py`, enabled by
`LINEWARDEN_TEST_FAULTS=leak-drill` in the gateway's environment only (docs/canary.md).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from canary_support import (
    IDENTITY_HEADER,
    PARTNER_HOST,
    PLAIN_HOST,
    PROBE_MSISDN,
    SUBSCRIBER_MSISDN,
    Gateway,
    start_gateway,
    wait_for,
)

INTERVAL = 1.0  # canary interval for the drill: containment must take < 2 x this
FAULTS = {"LINEWARDEN_TEST_FAULTS": "leak-drill"}
HEADER = IDENTITY_HEADER.lower()


class Webhook:
    """An alert receiver that fails its first `failures` POSTs (to exercise the retries)."""

    def __init__(self, failures: int = 1) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.attempts = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                hook.attempts += 1
                if hook.attempts <= failures:
                    self.send_response(503)
                else:
                    hook.raw.append(raw)
                    hook.bodies.append(json.loads(raw))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(failures=1)
    try:
        yield hook
    finally:
        hook.close()


def _canary(webhook: str = "", interval: float = INTERVAL) -> str:
    return f"""
[canary]
interval = {interval}
timeout = 0.8
expect_urls = {{ "billing" = ["http://{PARTNER_HOST}/api/check"] }}
webhook = "{webhook}"
"""


def _metrics(gw: Gateway) -> str:
    return gw.metrics()


def test_leak_drill_fault_to_containment(tmp_path: Path, webhook: Webhook) -> None:
    gw = start_gateway(tmp_path / "gw", canary=_canary(webhook.url), env=FAULTS)
    try:
        # Healthy: the partner gets the number, a non-partner does not; the canary agrees.
        assert gw.received(PARTNER_HOST).get(HEADER) == SUBSCRIBER_MSISDN
        assert HEADER not in gw.received(PLAIN_HOST)
        wait_for(lambda: gw.admin("GET", "/admin/canary").get("outcome") == "ok"
                 if _has_round(gw) else False, 5.0, step=0.05)

        fault_at = time.monotonic()
        gw.admin("POST", "/admin/test-faults/leak-everywhere")
        leaked: list[float] = []

        def contained() -> bool:
            if HEADER in gw.received(PLAIN_HOST):
                leaked.append(time.monotonic() - fault_at)
                return False
            return True

        # The fault is live now: a non-partner receives the number ...
        assert not contained() or _fault_logged(gw), "the injected fault did not leak"
        # ... until the canary's next round trips the switch.
        wait_for(contained, 2 * INTERVAL + 1.0, step=0.01)
        containment = time.monotonic() - fault_at
        status = gw.admin("GET", "/admin/killswitch")
        print(f"\nleak drill: fault -> containment {containment * 1000:.0f} ms "
              f"(canary interval {INTERVAL:g} s, bound {2 * INTERVAL:g} s; "
              f"{len(leaked)} leaking requests seen first)")
        assert containment < 2 * INTERVAL
        assert status["tripped"] is True and status["by"] == "canary"
        assert "non-partner" in status["reason"]

        # Every disclosure stops, not only the faulty one; traffic still flows.
        assert HEADER not in gw.received(PARTNER_HOST)
        assert HEADER not in gw.received(PLAIN_HOST)

        # The alert: log line, gauge, webhook (retried after a 503), never the number.
        wait_for(lambda: bool(webhook.bodies), 5.0, step=0.05)
        alert = webhook.bodies[0]
        assert alert["kind"] == "leak" and alert["status"] == "firing"
        assert alert["killswitch_tripped"] is True
        assert webhook.attempts >= 2
        for raw in webhook.raw:
            assert SUBSCRIBER_MSISDN.encode() not in raw and PROBE_MSISDN.encode() not in raw
        # The webhook saw the POST before the gateway's delivery thread got the answer back
        # and counted it: on a loaded machine the scrape can fall in between.
        delivered = 'linewarden_alert_webhook_deliveries_total{result="delivered"}'
        wait_for(lambda: delivered in _metrics(gw), 5.0, step=0.05)
        metrics = _metrics(gw)
        assert "linewarden_killswitch_tripped 1.0" in metrics
        assert 'linewarden_alert_active{kind="leak"} 1.0' in metrics
        assert 'linewarden_canary_rounds_total{outcome="leak"}' in metrics
        assert 'linewarden_withheld_disclosures_total{reason="killswitch"}' in metrics
        # every reason is listed from the start; this one must have counted
        assert 'linewarden_withheld_disclosures_total{reason="killswitch"} 0.0' not in metrics
        assert delivered in metrics
        assert SUBSCRIBER_MSISDN not in metrics and PROBE_MSISDN not in metrics
        log = gw.stderr()
        assert '"event": "alert"' in log and SUBSCRIBER_MSISDN not in log \
            and PROBE_MSISDN not in log

        # Clearing without fixing: the canary trips it again at its next round.
        gw.admin("POST", "/admin/killswitch/clear", {"reason": "trying", "by": "ops"})
        wait_for(lambda: gw.admin("GET", "/admin/killswitch")["tripped"], 2 * INTERVAL + 1)

        # Fixed (the reload replaces the faulty rules), then cleared by a person.
        assert gw.admin("POST", "/admin/reload")["reloaded"] is True
        gw.admin("POST", "/admin/killswitch/clear", {"reason": "fault removed", "by": "ops"})
        assert gw.received(PARTNER_HOST).get(HEADER) == SUBSCRIBER_MSISDN
        assert HEADER not in gw.received(PLAIN_HOST)
        time.sleep(INTERVAL * 1.5)  # a full round later it is still clear: no leak
        assert gw.admin("GET", "/admin/killswitch")["tripped"] is False
        assert "cleared" in gw.stderr() or '"action": "clear"' in gw.stderr()
    finally:
        gw.stop()


def _has_round(gw: Gateway) -> bool:
    return gw.admin_status("GET", "/admin/canary") == 200


def _fault_logged(gw: Gateway) -> bool:
    return "+fault" in gw.stderr()


def test_fault_hook_is_absent_without_the_exact_env_value(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "gw", env={"LINEWARDEN_TEST_FAULTS": "1"})
    try:
        assert gw.admin_status("POST", "/admin/test-faults/leak-everywhere") in (404, 405)
        assert "linewarden_test_faults_enabled 0.0" in _metrics(gw)
    finally:
        gw.stop()


def test_tripped_state_survives_a_restart(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "gw")
    try:
        gw.admin("POST", "/admin/killswitch/trip", {"reason": "incident 42", "by": "ops"})
        assert HEADER not in gw.received(PARTNER_HOST)
    finally:
        gw.stop()
    gw = start_gateway(tmp_path / "gw")  # same state dir
    try:
        assert "KILL SWITCH TRIPPED" in (gw.directory / "stdout.log").read_text()
        assert HEADER not in gw.received(PARTNER_HOST)
        assert gw.admin("GET", "/admin/killswitch")["reason"] == "incident 42"
    finally:
        gw.stop()


def test_corrupt_state_file_starts_tripped(tmp_path: Path) -> None:
    (tmp_path / "gw" / "state").mkdir(parents=True)
    (tmp_path / "gw" / "state" / "killswitch.json").write_text('{"tripped": fal')
    gw = start_gateway(tmp_path / "gw")
    try:
        assert HEADER not in gw.received(PARTNER_HOST)
        assert gw.admin("GET", "/admin/killswitch")["state_file_unreadable"] is True
        gw.admin("POST", "/admin/killswitch/clear", {"reason": "file restored", "by": "ops"})
        assert gw.received(PARTNER_HOST).get(HEADER) == SUBSCRIBER_MSISDN
    finally:
        gw.stop()


def test_admin_refuses_a_clear_without_reason(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "gw")
    try:
        gw.admin("POST", "/admin/killswitch/trip", {"reason": "drill"})
        for body in ({}, {"reason": "", "by": "ops"}, {"reason": "ok"}, {"reason": 5}):
            assert gw.admin_status("POST", "/admin/killswitch/clear", body) == 400
        assert gw.admin("GET", "/admin/killswitch")["tripped"] is True
    finally:
        gw.stop()
