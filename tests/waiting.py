"""Waiting on a condition in tests: the predicate's first truthy value, or an AssertionError
naming what never happened."""

from __future__ import annotations

import time


def wait_for(predicate, what: str, timeout_s: float = 60.0, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval_s)
    return value
