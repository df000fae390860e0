"""Process settings a low-latency scorer needs: one OpenMP thread, and a frozen startup heap.

LightGBM may open OpenMP parallel regions even on its single-row path, and their threads spin
against the server's other work: a server limits OpenMP to one thread on the thread that scores,
and its launchers set ``OMP_NUM_THREADS=1`` for child processes. A full garbage collection walks
every object the process holds (model, pandas, pydantic, botocore), ~90 ms in the scoring API
that every request in flight waits out; a server freezes what it built at startup so the
collector skips it, and a full collection then takes well under a millisecond
(`python benchmarks/serving.py --sections gc`). Cyclic garbage among frozen objects is never
freed: at most the startup model, once replaced.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

SERVER_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def single_threaded_openmp() -> bool:
    """Limit OpenMP parallel regions started from the calling thread to one thread.

    Returns False when no OpenMP runtime is loaded (nothing to limit).
    """
    for name in ("libgomp.so.1", ctypes.util.find_library("gomp"), ctypes.util.find_library("omp")):
        if not name:
            continue
        try:
            ctypes.CDLL(name).omp_set_num_threads(1)
            return True
        except (OSError, AttributeError):
            continue
    return False


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now out of the collector's sight."""
    gc.collect()
    gc.freeze()

