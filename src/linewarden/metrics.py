"""Prometheus metrics, one registry per gateway (so tests can run several in one process).

Labels never carry a subscriber: partner ids, claim names, reasons and status codes only.
Children are cached because `labels()` costs a lock and a dict build on every call.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.upstream_errors = Counter("linewarden_upstream_errors",
                                       "Upstream failures, by status sent", ["status"], registry=r)
        self.rejected = Counter("linewarden_rejected_requests",
                                "Requests refused by the gateway, by status", ["status"],
                                registry=r)
        self.reloads = Counter("linewarden_policy_reloads", "Policy reloads, by result",
                               ["result"], registry=r)
        self.bindings = Gauge("linewarden_bindings", "Subscriber bindings held", registry=r)
        self.connections = Gauge("linewarden_client_connections", "Open client connections",
                                 registry=r)
        self.latency = Histogram("linewarden_request_seconds",
                                 "Time from request head to response end", registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                          2.5, 5, 10))
        self._cache: dict[tuple[str, ...], Counter] = {}

    def count(self, counter: Counter, *labels: str, amount: int = 1) -> None:
        key = (counter._name, *labels)
        child = self._cache.get(key)
        if child is None:
            child = self._cache[key] = counter.labels(*labels)
        child.inc(amount)
