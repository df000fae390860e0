"""The decision log: every scoring decision as one JSON line, written off the request path.

The exposure log A/B analysis joins outcomes to, and the served-features log. `append` serializes
on the caller's thread and queues the line; a background thread writes the queue every
`flush_interval_s` to ``{directory}/date=YYYY-MM-DD/decisions-<pid>.jsonl`` (one file per process
and UTC day). A full queue drops the record and counts it rather than slow a request down.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import queue
import threading
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def log_path(directory: str | Path, when: dt.datetime, pid: int | None = None) -> Path:
    """The file a record of time `when` goes to."""
    return Path(directory) / f"date={when.strftime('%Y-%m-%d')}" / \
        f"decisions-{pid or os.getpid()}.jsonl"


_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class DecisionLog:
    """Buffered JSON-lines writer for decision records."""

    def __init__(self, directory: str | Path, flush_interval_s: float = 0.2,
                 max_queue: int = 100_000) -> None:
        self.directory = Path(directory)
        self.flush_interval_s = flush_interval_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._max_queue = max_queue
        # each counter has one writing thread: appended (callers' loop), processed (the writer)
        self._appended = 0
        self._processed = 0
        self.dropped = 0   # queue full (caller's thread)
        self.lost = 0      # write failed (writer thread)
        self.written = 0
        self._stop = threading.Event()
        self._flushed = threading.Condition()
        self._day: tuple[dt.date, Path] | None = None   # the current day's file
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def _path(self, when: dt.datetime) -> Path:
        day = self._day
        if day is None or day[0] != when.date():
            day = self._day = (when.date(), log_path(self.directory, when))
        return day[1]

    def append(self, record: dict[str, Any]) -> None:
        """Queue a record (stamped with the time it is appended if it has no `ts`); never blocks."""
        if self._appended - self._processed >= self._max_queue:
            self.dropped += 1
            return
        when = dt.datetime.now(dt.timezone.utc)
        record.setdefault("ts", when.isoformat())
        try:
            line = orjson.dumps(record, default=_default, option=_DUMPS_OPTIONS)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, which orjson refuses
            line = json.dumps(_nulls(record), default=_default, separators=(",", ":")).encode()
        self._appended += 1
        self._queue.put((self._path(when), line))

    def _drain(self) -> None:
        records = []
        while True:
            try:
                records.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not records:
            return
        by_file: dict[Path, list[bytes]] = {}
        for path, line in records:
            by_file.setdefault(path, []).append(line)
        for path, lines in by_file.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "ab") as fh:
                    fh.write(b"\n".join(lines) + b"\n")
                self.written += len(lines)
            except OSError as error:
                self.lost += len(lines)
                log.error("decision log %s not written (%d records lost): %s", path,
                          len(lines), error)
        self._processed += len(records)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self._drain()
            with self._flushed:
                self._flushed.notify_all()
        self._drain()

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until everything appended so far is on disk."""
        with self._flushed:
            target = self._appended
            self._flushed.wait_for(lambda: self._processed >= target, timeout=timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _nulls(obj: Any) -> Any:
    """NaN and infinities as null, as orjson writes them: JSON has no such numbers."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nulls(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nulls(v) for v in obj]
    return obj
