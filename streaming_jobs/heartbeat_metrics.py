"""The heartbeat as Prometheus text, for node_exporter's textfile collector.

The job has no HTTP server; `supervise` writes this file beside the heartbeat JSON (with
`--metrics-file`), so a killed or stuck job leaves its last timestamp behind and the
`IntentStreamStale` rule sees it age; a batch that runs on is `IntentStreamBatchHung`'s. The alert rules and the dashboard read these names.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

# status -> 1 while the job is meant to be processing
RUNNING = {"starting", "running", "idle"}
STATUSES = ("starting", "running", "idle", "stopped", "failed")

# (name, help, heartbeat field, scale): gauges copied from the heartbeat when present
GAUGES = (
    ("intent_stream_batch_id", "Last micro-batch id", "batch_id", 1.0),
    ("intent_stream_input_rows_per_second", "Events arriving per second (last batch)",
     "input_rows_per_second", 1.0),
    ("intent_stream_processed_rows_per_second", "Events processed per second (last batch)",
     "processed_rows_per_second", 1.0),
    ("intent_stream_batch_duration_seconds", "Duration of the last batch", "batch_duration_ms",
     0.001),
    ("intent_stream_event_to_redis_p50_seconds", "Event landing to Redis write, p50 of the last "
     "batch", "latency_p50_ms", 0.001),
    ("intent_stream_event_to_redis_p95_seconds", "Event landing to Redis write, p95 of the last "
     "batch", "latency_p95_ms", 0.001),
    ("intent_stream_live_sessions", "Sessions held in the job's state", "live_sessions", 1.0),
    ("intent_stream_state_memory_bytes", "Memory of Spark's state store", "state_memory_bytes",
     1.0),
    ("intent_stream_late_events_total", "Events quarantined as later than the watermark",
     "late_events_total", 1.0),
)


def _timestamp(text: Optional[str]) -> Optional[float]:
    if not text:
        return None
    try:
        stamp = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp()


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def heartbeat_metrics(heartbeat: dict) -> str:
    """Prometheus text exposition of one heartbeat (what `heartbeat_payload` returns)."""
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        kind = "counter" if name.endswith("_total") else "gauge"
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        lines.extend(f"{name}{labels} {value!r}" for labels, value in samples)

    updated = _timestamp(heartbeat.get("last_update_time"))
    if updated is not None:
        gauge("intent_stream_heartbeat_timestamp_seconds",
              "When the job last wrote its heartbeat (Unix time)", [("", updated)])
    status = heartbeat.get("status")
    gauge("intent_stream_up", "1 while the job is starting, running or idle; 0 once stopped or "
          "failed", [("", 1.0 if status in RUNNING else 0.0)])
    gauge("intent_stream_status", "The job's status, one series per status",
          [(f'{{status="{s}"}}', 1.0 if s == status else 0.0) for s in STATUSES])
    batch_since = _timestamp(heartbeat.get("batch_running_since"))
    if batch_since is not None:
        gauge("intent_stream_batch_running_since_timestamp_seconds",
              "When the batch running now started (Unix time); absent between batches",
              [("", batch_since)])
    watermark = _timestamp(heartbeat.get("watermark"))
    if watermark is not None and watermark > 0:
        gauge("intent_stream_watermark_timestamp_seconds", "The event-time watermark (Unix time)",
              [("", watermark)])
    for name, help_text, field, scale in GAUGES:
        value = heartbeat.get(field)
        if value is not None:
            gauge(name, help_text, [("", float(value) * scale)])
    quarantine = heartbeat.get("quarantine_total") or {}
    if quarantine:
        gauge("intent_stream_quarantined_events_total", "Events quarantined by the job, by "
              "reason",
              [(f'{{reason="{_label(r)}"}}', float(n)) for r, n in sorted(quarantine.items())])
    return "\n".join(lines) + "\n"
