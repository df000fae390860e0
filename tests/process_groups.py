"""Servers the tests start in their own process group (the Dagster webserver and daemon, the
API, a streaming job), recorded so that a test run killed before its teardown leaves none behind.

Each group started here is written to `REGISTRY` as a file named by its group id holding the pid
of the pytest that started it, and its processes carry that pid in `MARKER` in their
environment. `stop_group` stops the group and removes the file. A run that is sent SIGTERM stops
its groups before it exits; a run killed outright cannot, so the next run (`sweep`, at the start
of every session) stops what is left of every recorded group whose pytest is gone: only
processes in that group with the marker, so a reused process id is never hit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from intent_resources.streaming import pid_alive

REPO = Path(__file__).resolve().parents[1]
REGISTRY = REPO / ".intent" / "test-process-groups"
MARKER = "INTENT_TEST_RUN"


def start_group(args: list[str], env: dict, log: Path | None, cwd: Path = REPO
                ) -> subprocess.Popen:
    """Start a program in its own process group, so stopping it also stops what it spawned
    (code servers, run workers, Spark's JVM); its output goes to `log` (None: discarded)."""
    REGISTRY.mkdir(parents=True, exist_ok=True)
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(args, cwd=cwd, env={**env, MARKER: str(os.getpid())},
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log is not None:
            out.close()
    (REGISTRY / str(process.pid)).write_text(str(os.getpid()))
    return process


def stop_group(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM the group, then SIGKILL what is left of it after `timeout`."""
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(2)  # let the group's other members act on the signal before the next one
    finally:
        (REGISTRY / str(process.pid)).unlink(missing_ok=True)


def _members(pgid: int, owner: int) -> list[int]:
    """Processes of group `pgid` whose environment carries `owner`'s marker."""
    marker = f"{MARKER}={owner}".encode()
    members = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[2]) != pgid:
                continue
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                members.append(int(proc.name))
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
    return members


def sweep(owner: int | None = None) -> list[int]:
    """SIGKILL what is left of the recorded groups whose pytest has exited (or, with `owner`,
    of those that pytest started) and forget them; the processes killed."""
    killed = []
    for entry in REGISTRY.glob("[0-9]*") if REGISTRY.is_dir() else ():
        try:
            started_by = int(entry.read_text() or 0)
        except (OSError, ValueError):
            started_by = 0
        if (started_by != owner) if owner is not None else pid_alive(started_by):
            continue
        for pid in _members(int(entry.name), started_by):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        entry.unlink(missing_ok=True)
    return killed
