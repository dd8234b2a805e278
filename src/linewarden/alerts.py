"""Alerts: one structured log line, a gauge, and an optional webhook POST, for each change.

An alert is raised when a condition starts ("firing") and once more when it ends
("resolved") — not on every canary round, so a webhook receiver is not flooded every 5 s.
Nothing here ever carries a raw MSISDN: texts pass `mask_numbers`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .killswitch import mask_numbers
from .metrics import Metrics

log = logging.getLogger("linewarden.alert")

AlertKind = Literal["leak", "degraded"]
WEBHOOK_SCHEMA_VERSION = 1

# Webhook delivery: 5 attempts, 0.5 s doubling to at most 8 s between them (~15 s in all),
# each POST given 5 s. Like Alertmanager's webhook sender, a 4xx other than 408/429 is the
# receiver refusing the payload: retrying cannot help.
WEBHOOK_ATTEMPTS = 5
WEBHOOK_FIRST_BACKOFF = 0.5
WEBHOOK_MAX_BACKOFF = 8.0
WEBHOOK_TIMEOUT = 5.0
_RETRYABLE_4XX = frozenset({408, 429})


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    status: Literal["firing", "resolved"]
    summary: str
    details: tuple[str, ...] = ()
    instance: str = ""
    killswitch_tripped: bool = False
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": WEBHOOK_SCHEMA_VERSION,
            "source": "linewarden",
            "event": "alert",
            "kind": self.kind,
            "status": self.status,
            "summary": mask_numbers(self.summary),
            "details": [mask_numbers(d) for d in self.details],
            "instance": self.instance,
            "killswitch_tripped": self.killswitch_tripped,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds"),
        }


class Alerter:
    def __init__(self, *, webhook: str = "", metrics: Metrics | None = None,
                 instance: str = "") -> None:
        self.webhook = webhook
        self.metrics = metrics
        self.instance = instance
        self.active: dict[str, Alert] = {}
        self._deliveries: set[asyncio.Task[bool]] = set()

    def fire(self, kind: AlertKind, summary: str, details: tuple[str, ...] = (), *,
             killswitch_tripped: bool = False) -> Alert:
        alert = Alert(kind, "firing", summary, details, self.instance, killswitch_tripped)
        self.active[kind] = alert
        self._emit(alert, logging.ERROR if kind == "leak" else logging.WARNING)
        return alert

    def resolve(self, kind: AlertKind, summary: str, *,
                killswitch_tripped: bool = False) -> Alert | None:
        if self.active.pop(kind, None) is None:
            return None
        alert = Alert(kind, "resolved", summary, (), self.instance, killswitch_tripped)
        self._emit(alert, logging.INFO)
        return alert

    def _emit(self, alert: Alert, level: int) -> None:
        body = alert.to_json()
        log.log(level, json.dumps(body, sort_keys=True))
        if self.metrics is not None:
            self.metrics.alert_active.labels(alert.kind).set(
                1 if alert.status == "firing" else 0)
        if self.webhook:
            task = asyncio.get_running_loop().create_task(self.deliver(body))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def deliver(self, body: dict[str, Any]) -> bool:
        """POST with retries and backoff; True once the receiver answered 2xx."""
        payload = json.dumps(body).encode()
        delay = WEBHOOK_FIRST_BACKOFF
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            status = await asyncio.to_thread(_post, self.webhook, payload)
            if 200 <= status < 300:
                self._count("delivered")
                return True
            final = 400 <= status < 500 and status not in _RETRYABLE_4XX
            log.warning("alert webhook attempt %d/%d failed (%s)%s", attempt, WEBHOOK_ATTEMPTS,
                        status or "no answer", "; not retrying" if final else "")
            if final:
                break
            if attempt < WEBHOOK_ATTEMPTS:
                self._count("retried")
                await asyncio.sleep(delay)
                delay = min(delay * 2, WEBHOOK_MAX_BACKOFF)
        self._count("failed")
        log.error("alert webhook gave up: %s %s", body["kind"], body["status"])
        return False

    async def close(self, timeout: float = 2.0) -> None:
        """Give pending deliveries a moment at shutdown, then drop them."""
        if self._deliveries:
            _done, pending = await asyncio.wait(set(self._deliveries), timeout=timeout)
            for task in pending:
                task.cancel()

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.count(self.metrics.webhook_deliveries, result)


def _post(url: str, payload: bytes) -> int:
    """One POST; the HTTP status, or 0 when there was no answer at all."""
    request = urllib.request.Request(url, data=payload, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "linewarden-alert/1"})
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0
