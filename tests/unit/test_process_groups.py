"""A test run killed before its teardown leaves no server behind: the next run stops it."""

from __future__ import annotations

import subprocess
import sys
import time

from intent_resources.streaming import pid_alive
from tests.process_groups import REGISTRY, sweep

REPO = REGISTRY.parents[1]


def test_a_group_left_by_a_killed_run_is_stopped_by_the_next_and_nothing_else_is():
    # a "test run" that starts a server group (a shell and its child) and dies without teardown
    started = subprocess.run([sys.executable, "-c", (
        "import os, sys\n"
        "from tests.process_groups import start_group\n"
        "p = start_group(['sh', '-c', 'sleep 300 & echo $!; wait'], dict(os.environ), None)\n"
        "print(p.pid, flush=True)\n"
        "os._exit(0)\n")], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    leader = int(started.stdout.split()[0])
    assert (REGISTRY / str(leader)).is_file()
    # a process without the marker is never touched, even when its group id is recorded as
    # started by a run that is gone (a reused process id)
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (REGISTRY / str(bystander.pid)).write_text(str(2 ** 22 + 1))   # above any pid_max
        killed = sweep()
        assert leader in killed and len([p for p in killed if p != leader]) >= 1
        deadline = time.monotonic() + 30
        while pid_alive(leader) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(leader)
        assert not (REGISTRY / str(leader)).exists()
        assert bystander.poll() is None and bystander.pid not in killed
    finally:
        bystander.kill()
        bystander.wait()
        (REGISTRY / str(bystander.pid)).unlink(missing_ok=True)
