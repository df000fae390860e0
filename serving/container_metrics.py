"""The inference container's Prometheus metrics, served at `GET /metrics` beside the contract."""

from __future__ import annotations


class ContainerMetrics:
    """Invocations by status, their latency, and whether a model is loaded; a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "intent_container_invocation_latency_seconds", "Time to answer an invocation",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
        self.invocations = Counter("intent_container_invocations_total",
                                   "Invocations by HTTP status", ["status"], registry=self.registry)
        self.model_loaded = Gauge("intent_container_model_loaded",
                                  "1 while a model is loaded and served", registry=self.registry)
        self._by_status: dict[int, object] = {}

    def answered(self, status: int, seconds: float) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.invocations.labels(str(status))
        child.inc()
        self.latency.observe(seconds)

    async def send(self, send, loaded: bool) -> None:
        """The metrics as an ASGI response in Prometheus' text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.model_loaded.set(1 if loaded else 0)
        body = generate_latest(self.registry)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
