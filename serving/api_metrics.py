"""The scoring API's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from typing import Any


class ApiMetrics:
    """The API's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "intent_score_latency_seconds", "Time to answer a scoring request, by route",
            ["route"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1,
                     0.25, 1.0))
        self.requests = Counter("intent_score_requests_total", "Scoring requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.fallbacks = Counter("intent_score_fallbacks_total", "Answers given by a fallback",
                                 ["kind"], registry=self.registry)
        self.errors = Counter("intent_score_errors_total", "Failures met while scoring, by kind",
                              ["kind"], registry=self.registry)
        self.decisions = Counter("intent_decisions_total", "Decisions by action", ["action"],
                                 registry=self.registry)
        self.breaker = Gauge("intent_breaker_state",
                             "Circuit breaker state (0 closed, 1 half-open, 2 open)",
                             ["dependency"], registry=self.registry)
        self._children: dict[tuple[str, Any], Any] = {}

    def count(self, name: str, label: str) -> None:
        key = (name, label)
        child = self._children.get(key)
        if child is None:
            metric = {"fallback": self.fallbacks, "error": self.errors,
                      "decision": self.decisions}[name]
            child = self._children[key] = metric.labels(label)
        child.inc()

    def answered(self, route: str, status: int, seconds: float | None = None) -> None:
        """One request to a scoring route: its status, and its latency when it was answered."""
        key = (route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, str(status))
        child.inc()
        if status == 422:
            self.count("error", "validation")
        if seconds is not None:
            key = (route, "latency")
            latency = self._children.get(key)
            if latency is None:
                latency = self._children[key] = self.latency.labels(route)
            latency.observe(seconds)
