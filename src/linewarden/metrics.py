"""Prometheus metrics, one registry per gateway (so tests can run several in one process).

Labels never carry a subscriber: partner ids, claim names, reasons and status codes only.
The data plane counts into plain ints and the registry is brought up to date when scraped
(`flush`): prometheus-client's `inc()` and `observe()` take a lock each, and four of them per
request were a measurable share of the gateway's CPU per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from .decide import Withheld

# Why a partner request went without identity, each its own label value: what decide()
# says, then what the data plane adds — the ledger did not take the record, or the kill
# switch is tripped only because its shared state could not be confirmed (Redis away).
WITHHELD_REASONS = (*get_args(Withheld), "ledger", "killswitch_unknown")

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0)


class LatencyHistogram(Collector):
    """`linewarden_request_seconds`, observed with one bisect and two additions."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily("linewarden_request_seconds",
                                    "Time from request head to response end",
                                    buckets=buckets, sum_value=self.total)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("linewarden_requests", "Requests answered, by mode and status",
                                ["mode", "status"], registry=r)
        self.strips = Counter("linewarden_stripped_headers",
                              "Client-sent headers removed, by reason", ["reason"], registry=r)
        self.disclosures = Counter("linewarden_disclosures", "Claims disclosed, by partner",
                                   ["partner", "claim"], registry=r)
        self.withheld = Counter("linewarden_withheld_disclosures",
                                "Partner requests forwarded without identity, by reason",
                                ["reason"], registry=r)
        for reason in WITHHELD_REASONS:  # every reason shows, at 0 until it happens
            self.withheld.labels(reason)
        self.upstream_errors = Counter("linewarden_upstream_errors",
                                       "Upstream failures, by status sent", ["status"], registry=r)
        self.upstream_retries = Counter(
            "linewarden_upstream_retries",
            "Requests sent again on a fresh upstream connection, by cause", ["cause"],
            registry=r)
        self.rejected = Counter("linewarden_rejected_requests",
                                "Requests refused by the gateway, by status", ["status"],
                                registry=r)
        self.refused_destinations = Counter(
            "linewarden_refused_destinations",
            "Proxy requests refused (403) for where they would connect, by reason "
            "(destinations.py)", ["reason"], registry=r)
        self.proxy_headers = Counter(
            "linewarden_proxy_protocol_headers",
            "PROXY protocol headers from trusted balancers, by result (proxy/proxied.py)",
            ["result"], registry=r)
        self.intercepted = Counter(
            "linewarden_intercepted_requests",
            "Requests on an intercepting listener, by how Host and the original destination "
            "agreed (proxy/intercept.py)", ["result"], registry=r)
        self.reloads = Counter("linewarden_policy_reloads", "Policy reloads, by result",
                               ["result"], registry=r)
        self.bindings = Gauge("linewarden_bindings", "Subscriber bindings held", registry=r)
        self.connections = Gauge("linewarden_client_connections", "Open client connections",
                                 registry=r)
        self.latency = LatencyHistogram()
        r.register(self.latency)
        # ---- canary, kill switch and alerts
        self.killswitch_tripped = Gauge("linewarden_killswitch_tripped",
                                        "1 while no identity is disclosed (kill switch)",
                                        registry=r)
        self.killswitch_shared_unreachable = Gauge(
            "linewarden_killswitch_shared_unreachable",
            "1 while the shared kill switch state (Redis) cannot be confirmed", registry=r)
        self.killswitch_changes = Counter("linewarden_killswitch_changes",
                                          "Kill switch changes applied here, by action",
                                          ["action"], registry=r)
        self.canary_rounds = Counter("linewarden_canary_rounds", "Canary rounds, by outcome",
                                     ["outcome"], registry=r)
        self.canary_last = Gauge("linewarden_canary_last_outcome",
                                 "1 for the outcome of the last canary round, 0 for the others",
                                 ["outcome"], registry=r)
        self.canary_last_time = Gauge("linewarden_canary_last_round_timestamp_seconds",
                                      "When the last canary round finished", registry=r)
        self.canary_round_seconds = Histogram("linewarden_canary_round_seconds",
                                              "Duration of a canary round", registry=r,
                                              buckets=(.005, .01, .025, .05, .1, .25, .5, 1,
                                                       2.5, 5, 10))
        self.alert_active = Gauge("linewarden_alert_active",
                                  "1 while an alert of this kind is raised", ["kind"],
                                  registry=r)
        self.webhook_deliveries = Counter("linewarden_alert_webhook_deliveries",
                                          "Alert webhook POSTs, by result", ["result"],
                                          registry=r)
        self.test_faults_enabled = Gauge("linewarden_test_faults_enabled",
                                         "1 when test-only fault hooks are enabled "
                                         "(LINEWARDEN_TEST_FAULTS; never in production)",
                                         registry=r)
        self._pending: dict[tuple[Counter, tuple[str, ...]], int] = {}

    def count(self, counter: Counter, *labels: str, amount: int = 1) -> None:
        key = (counter, labels)
        self._pending[key] = self._pending.get(key, 0) + amount

    def flush(self) -> None:
        """Apply the counts gathered since the last scrape to the registry's counters."""
        pending, self._pending = self._pending, {}
        for (counter, labels), amount in pending.items():
            counter.labels(*labels).inc(amount)
