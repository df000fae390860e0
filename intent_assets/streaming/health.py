"""Is the streaming job healthy? A pure decision from its heartbeat, its process and thresholds.

The supervisor sensor calls `assess_stream` on every tick; `intent stream status` prints the same
verdict. Rules (first match wins):

| heartbeat | process | verdict | restart |
|---|---|---|---|
| none | alive | starting | no |
| none | not alive | absent (never started here) | no |
| status `stopped`, process gone | | stopped (on purpose: `intent stream stop`) | no |
| status `failed` | | dead (the query failed) | yes |
| any other, process gone | | dead (killed or crashed) | yes |
| a batch running longer than `max_batch_s` | alive or unknown | stale (hung batch) | yes |
| `starting`, younger than the startup grace | | starting | no |
| older than `stale_after_s` | alive or unknown | stale (hung) | yes |
| otherwise | | healthy | no |

`pid_alive` is None where no local process exists to look at (the job runs on EMR): only the
heartbeat speaks then.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Optional

from intent_resources.streaming import Thresholds


@dataclass(frozen=True)
class Decision:
    status: str
    reason: str
    restart: bool


def heartbeat_age_s(heartbeat: Optional[dict], now: dt.datetime,
                    field: str = "last_update_time") -> Optional[float]:
    """Seconds since the heartbeat's time `field` (when it was written; None without a readable
    time)."""
    if not heartbeat or not heartbeat.get(field):
        return None
    try:
        written = dt.datetime.fromisoformat(str(heartbeat[field]))
    except ValueError:
        return None
    if written.tzinfo is None:
        written = written.replace(tzinfo=dt.timezone.utc)
    return (now - written).total_seconds()


def assess_stream(heartbeat: Optional[dict], now: dt.datetime, pid_alive: Optional[bool],
                  thresholds: Thresholds = Thresholds()) -> Decision:
    """The supervisor's verdict on the job (see the module's table)."""
    if not heartbeat:
        if pid_alive:
            return Decision("starting", "process running, no heartbeat yet", False)
        return Decision("absent", "no heartbeat and no process: the job was never started",
                        False)
    status = heartbeat.get("status")
    age = heartbeat_age_s(heartbeat, now)
    if status == "stopped" and not pid_alive:
        return Decision("stopped", "the job was stopped on purpose", False)
    if status == "failed":
        return Decision("dead", f"the query failed: {heartbeat.get('error') or 'unknown error'}",
                        True)
    if pid_alive is False:
        return Decision("dead", f"process gone; last heartbeat {_age_text(age)} ago "
                                f"(batch {heartbeat.get('batch_id')})", True)
    batch_age = heartbeat_age_s(heartbeat, now, "batch_running_since")
    if batch_age is not None and batch_age > thresholds.max_batch_s:
        return Decision("stale", f"batch {_next_batch(heartbeat)} running for "
                                 f"{_age_text(batch_age)} (limit {thresholds.max_batch_s:.0f} s)",
                        True)
    if status == "starting" and age is not None and age <= thresholds.startup_grace_s:
        return Decision("starting", f"starting for {_age_text(age)}", False)
    if age is None or age > thresholds.stale_after_s:
        return Decision("stale", f"no heartbeat for {_age_text(age)} (threshold "
                                 f"{thresholds.stale_after_s:.0f} s), batch "
                                 f"{heartbeat.get('batch_id')}", True)
    running = f", batch {_next_batch(heartbeat)} running for {_age_text(batch_age)}" \
        if batch_age is not None else ""
    return Decision("healthy", f"batch {heartbeat.get('batch_id')}{running}, heartbeat "
                               f"{_age_text(age)} old", False)


def _next_batch(heartbeat: dict):
    """The id of the batch after the heartbeat's latest finished one (the one running)."""
    done = heartbeat.get("batch_id")
    return done + 1 if isinstance(done, int) else 0


def _age_text(age: Optional[float]) -> str:
    return "an unknown time" if age is None else f"{age:.0f} s"


def incident_key(heartbeat: Optional[dict], decision: Decision) -> str:
    """One key per incident: the same stuck or dead heartbeat always gives the same key.

    A restarted job writes new heartbeats, so its next failure is a new incident. A hung batch's
    heartbeat keeps being refreshed: the time the batch started names that incident.
    """
    hb = heartbeat or {}
    since = hb.get("batch_running_since") or hb.get("last_update_time")
    basis = "|".join(str(v) for v in (hb.get("run_id"), hb.get("batch_id"), since, hb.get("pid")))
    digest = hashlib.sha1(f"{decision.status}|{basis}".encode()).hexdigest()[:16]
    return f"stream-{decision.status}-{digest}"
