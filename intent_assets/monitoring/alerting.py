"""What an alert says: pure builders for run failures and monitoring findings."""

from __future__ import annotations

from typing import Optional, Sequence


def run_failure_alert(run_id: str, job_name: str, failed_steps: Sequence[str], error: Optional[str],
                      run_url: str) -> tuple[str, dict]:
    """Subject and body of the alert for a failed run: which run, which step, where to look."""
    steps = ", ".join(failed_steps) or "(no step failed: the run failed to start or was killed)"
    subject = f"Dagster run failed: {job_name} at {steps}"
    body = {"kind": "run_failure", "run_id": run_id, "job": job_name, "failed_steps": list(failed_steps),
            "error": (error or "")[:2000], "run_url": run_url}
    return subject, body


def findings_alert(asset: str, partition: str, findings: list[dict]) -> tuple[str, dict]:
    """Subject and body of the alert for monitoring findings of one asset partition."""
    kinds = sorted({f["kind"] for f in findings})
    subject = f"{asset} {partition}: {', '.join(kinds)}"
    return subject, {"kind": "monitoring", "asset": asset, "partition": partition, "findings": findings}


def live_anomaly_alert(findings: list[dict]) -> tuple[str, dict]:
    """Subject and body of the alert for new minute-detector findings (one sensor tick)."""
    import datetime as dt

    def when(minute: int) -> str:
        return dt.datetime.fromtimestamp(minute * 60, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")

    named = sorted({f"{f['check']} {f['dimension']}={f['value']}" for f in findings})
    subject = f"live anomaly: {', '.join(named)}"
    body = {"kind": "live_anomaly", "asset": "session_features_stream",
            "findings": [{**f, "minute_utc": when(f["minute"])} for f in findings]}
    return subject, body
