"""The streaming job as a local background process: where its files live, start, stop, look.

`intent stream start|stop|status` and the `start_streaming_job` run (locally) share this code.
Everything sits under `$INTENT_HOME/stream/`: `landing/` (the replayer writes, the job reads),
`checkpoint/`, `heartbeat.json`, `job.pid`, `job.log`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class LocalStream:
    """Paths and settings of the local streaming job under one INTENT_HOME."""

    home: Path
    redis_url: str
    lake: str
    source: str = "files"
    trigger: str = "1 second"
    master: str = "local[2]"
    kinesis_stream: Optional[str] = None
    kinesis_endpoint: Optional[str] = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def directory(self) -> Path:
        return self.home / "stream"

    @property
    def landing(self) -> Path:
        return self.directory / "landing"

    @property
    def checkpoint(self) -> Path:
        return self.directory / "checkpoint"

    @property
    def heartbeat(self) -> Path:
        return self.directory / "heartbeat.json"

    @property
    def pid_file(self) -> Path:
        return self.directory / "job.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "job.log"

    def command(self) -> list[str]:
        """The job's command line (the venv's Python, `-m streaming_jobs.session_job`)."""
        cmd = [sys.executable, "-m", "streaming_jobs.session_job",
               "--checkpoint", str(self.checkpoint), "--heartbeat", str(self.heartbeat),
               "--redis-url", self.redis_url, "--lake", self.lake,
               "--trigger", self.trigger, "--master", self.master, "--source", self.source]
        if self.source == "files":
            cmd += ["--landing", str(self.landing)]
        else:
            cmd += ["--kinesis-stream", str(self.kinesis_stream)]
            if self.kinesis_endpoint:
                cmd += ["--kinesis-endpoint", self.kinesis_endpoint]
        return cmd + list(self.extra_args)


def pid_alive(pid: Optional[int]) -> bool:
    """Whether a process with this id runs (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def read_pid(stream: LocalStream) -> Optional[int]:
    try:
        return int(stream.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(stream: LocalStream) -> Optional[int]:
    """The job's pid if it is running, else None."""
    pid = read_pid(stream)
    return pid if pid_alive(pid) else None


def start(stream: LocalStream) -> int:
    """Start the job in the background (its own process group); returns its pid.

    Refuses when it already runs: two jobs on one checkpoint would fight over it.
    """
    pid = running_pid(stream)
    if pid:
        raise RuntimeError(f"the streaming job already runs (pid {pid}); stop it first")
    stream.directory.mkdir(parents=True, exist_ok=True)
    if stream.source == "files":
        stream.landing.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # the job imports streaming_jobs from the project, wherever the caller's cwd is
    project_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    with open(stream.log_file, "ab") as log:
        proc = subprocess.Popen(stream.command(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    stream.pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop(stream: LocalStream, timeout_s: float = 60.0) -> bool:
    """Stop the job: SIGTERM (it finishes the batch and writes a last heartbeat), then SIGKILL.

    Returns whether a running job was stopped.
    """
    pid = running_pid(stream)
    if not pid:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)  # the whole group: the JVM and Python workers too
        except ProcessLookupError:
            pass
    stream.pid_file.unlink(missing_ok=True)
    return True


def restart(stream: LocalStream) -> int:
    """Stop the job if it runs (a hung one gets killed), then start it again."""
    stop(stream)
    return start(stream)
