"""What the job tells a Dagster run through Pipes: its start, its progress now and then, its end.

`PipesReporter(None)` (the job not launched by Dagster) does nothing. Progress goes out when the
heartbeat's status changes or its first batch is done, and at most once per `every_s` otherwise, so a job that runs for weeks
does not fill the run's event log with one line a second.
"""

from __future__ import annotations

import time
from typing import Optional

PROGRESS_FIELDS = ("batch_id", "input_rows", "processed_rows_per_second", "live_sessions",
                   "sessions_written", "latency_p95_ms", "watermark")


class PipesReporter:
    def __init__(self, pipes, every_s: float = 60.0, clock=time.monotonic) -> None:
        self.pipes = pipes
        self.every_s = every_s
        self.clock = clock
        self._last_status: Optional[tuple] = None
        self._last_sent = float("-inf")

    def started(self, cfg, sink) -> None:
        if self.pipes is None:
            return
        resumed = sink.last.batch_id if sink.last is not None else -1
        where = (f"resuming after batch {resumed}" if resumed >= 0
                 else "on a new checkpoint")
        self.pipes.log.info(f"session job started: source {cfg.source}, checkpoint "
                            f"{cfg.checkpoint} ({where}), heartbeat {cfg.heartbeat}")

    def heartbeat(self, payload: dict) -> None:
        """Called with every heartbeat written; sends what is worth a line in the run."""
        if self.pipes is None:
            return
        status = payload.get("status")
        # a job idle before its first batch says so once, and its first batch is news
        key = (status, payload.get("batch_id") is not None)
        now = self.clock()
        if key == self._last_status and now - self._last_sent < self.every_s:
            return
        self._last_status, self._last_sent = key, now
        figures = ", ".join(f"{k} {payload.get(k)}" for k in PROGRESS_FIELDS
                            if payload.get(k) is not None)
        self.pipes.log.info(f"session job {status}" + (f": {figures}" if figures else ""))

    def ended(self, code: int) -> None:
        if self.pipes is None:
            return
        if code:
            self.pipes.log.error(f"session job ended with exit code {code}")
        else:
            self.pipes.log.info("session job stopped")
