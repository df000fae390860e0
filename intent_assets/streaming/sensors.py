"""`streaming_supervisor_sensor`: watch the job's heartbeat, observe it, restart it when needed."""

import datetime as dt

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from intent_assets.streaming.assets import session_features_stream
from intent_assets.streaming.health import assess_stream, heartbeat_age_s, incident_key
from intent_assets.streaming.jobs import start_streaming_job
from intent_resources.streaming import StreamingJobResource

# heartbeat fields reported as observation metadata, under the same names
_FIGURES = ("batch_id", "input_rows", "input_rows_per_second", "processed_rows_per_second",
            "batch_duration_ms", "watermark", "state_rows", "live_sessions", "sessions_written",
            "sessions_closed", "late_events_total", "latency_p50_ms", "latency_p95_ms",
            "last_update_time", "pid")


def observation_metadata(heartbeat: dict | None, decision, age_s, pid_alive) -> dict:
    """What one check saw, as metadata on the stream asset."""
    hb = heartbeat or {}
    meta = {"status": decision.status, "reason": decision.reason,
            "heartbeat_age_s": round(age_s, 1) if age_s is not None else None,
            "pid_alive": pid_alive}
    meta.update({name: hb.get(name) for name in _FIGURES})
    meta["quarantine_total"] = MetadataValue.json(hb.get("quarantine_total") or {})
    return {k: v for k, v in meta.items() if v is not None}


# Running by default: with no job started it only observes ("absent"), it never starts one.
@sensor(job=start_streaming_job, minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING)
def streaming_supervisor_sensor(context: SensorEvaluationContext,
                                streaming: StreamingJobResource) -> SensorResult:
    """Checks the streaming job's heartbeat; restarts the job (once per incident) when it is
    dead or stale, with an alert."""
    now = dt.datetime.now(dt.timezone.utc)
    heartbeat = streaming.read_heartbeat()
    alive = streaming.pid_alive()
    decision = assess_stream(heartbeat, now, alive, streaming.thresholds())
    age = heartbeat_age_s(heartbeat, now)
    observation = AssetObservation(
        asset_key=session_features_stream.key,
        metadata=observation_metadata(heartbeat, decision, age, alive))
    if not decision.restart:
        return SensorResult(asset_events=[observation], cursor=context.cursor)

    key = incident_key(heartbeat, decision)
    if context.cursor != key:  # a new incident: alert once
        alert = {"source": "streaming_supervisor_sensor", "severity": "error",
                 "status": decision.status, "reason": decision.reason, "run_key": key,
                 "batch_id": (heartbeat or {}).get("batch_id")}
        streaming.alert(alert)
        context.log.error(f"streaming job {decision.status}: {decision.reason}; "
                          f"requesting a restart ({key})")
    run = RunRequest(
        run_key=key,
        run_config={"ops": {"start_stream": {"config": {"reason": decision.reason}}}},
        tags={"incident": key, "stream_status": decision.status})
    return SensorResult(run_requests=[run], asset_events=[observation], cursor=key)
