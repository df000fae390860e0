"""The processes of `intent stack`: started detached, recorded, waited on and stopped by id.

Each part of the stack is one or more processes the project starts itself, each in its own
session (process group), so stopping a part also stops what it spawned (Spark's JVM children,
Dagster's run workers). What runs is recorded in ``$INTENT_HOME/stack/state.json``: per part its
pids, its address and its log, which `status` and `down` read.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from intent_resources.streaming import pid_alive


class StackPartError(RuntimeError):
    """A part of the stack could not be started; says which and where its log is."""


@dataclass
class Part:
    """One part of the stack as recorded: its processes, where it answers, its log."""

    name: str
    pids: list[int] = field(default_factory=list)
    address: str = ""
    log: str = ""
    note: str = ""

    def alive(self) -> bool:
        return bool(self.pids) and all(pid_alive(pid) for pid in self.pids)


def stack_dir(home: Path) -> Path:
    return home / "stack"


def state_file(home: Path) -> Path:
    return stack_dir(home) / "state.json"


def load_state(home: Path) -> dict:
    """{'parts': [Part...], 'settings': {...}} as recorded; empty when no stack was started."""
    try:
        raw = json.loads(state_file(home).read_text())
    except (OSError, ValueError):
        return {"parts": [], "settings": {}}
    return {"parts": [Part(**p) for p in raw.get("parts", [])],
            "settings": raw.get("settings", {})}


def save_state(home: Path, parts: Sequence[Part], settings: Mapping[str, str]) -> None:
    path = state_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"parts": [asdict(p) for p in parts], "settings": dict(settings)},
                              indent=2))
    tmp.replace(path)


def free_ports(count: int, offset: int = 0) -> list[int]:
    """`count` distinct loopback ports free now; with `offset`, port + offset is free too
    (a Redis cluster node's bus listens on port + 10000)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port in ports or (offset and not _is_free(port + offset)):
            continue
        ports.append(port)
    return ports


def _is_free(port: int) -> bool:
    if port > 65535:
        return False
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(command: Sequence[str], log: Path, env: Optional[Mapping[str, str]] = None,
          cwd: Optional[Path] = None) -> int:
    """Start `command` detached in its own session, output to `log`; its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env or os.environ),
                                cwd=str(cwd) if cwd else None, start_new_session=True)
    return proc.pid


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float,
               pids: Sequence[int] = (), log: Optional[Path] = None, poll_s: float = 0.2) -> None:
    """Wait for `condition`; fail early, with the log's tail, if one of `pids` dies."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        dead = [pid for pid in pids if not pid_alive(pid)]
        if dead or time.monotonic() > deadline:
            reason = f"process {dead[0]} exited" if dead else f"not ready after {timeout_s:.0f} s"
            raise StackPartError(f"{what}: {reason}{_tail(log)}")
        time.sleep(poll_s)


def _tail(log: Optional[Path], lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; {log} ends with:\n  " + "\n  ".join(text)


def stop_pids(pids: Sequence[int], timeout_s: float = 20.0) -> None:
    """SIGTERM each process's group, wait, then SIGKILL what is left (the group again)."""
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        # the group as well: children that outlived their leader (a JVM, a run worker)
        _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def group_members(pids: Sequence[int]) -> list[int]:
    """Processes still alive in the process groups led by `pids` (what `down` must leave empty)."""
    groups = set(pids)
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(") ", 1)[1].split()
        # fields: state, ppid, pgrp, ...
        if int(fields[2]) in groups and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive
