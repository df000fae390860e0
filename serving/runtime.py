"""Process settings a low-latency scorer needs.

LightGBM's predict calls may open OpenMP parallel regions despite the fast path's
``num_threads=1``: on a busy 2-core box their threads spin against the server's other work and a
call takes 2-4x longer (measured with the TreeSHAP call this path used to make). A server
therefore limits OpenMP to one thread on the thread that scores (the event loop's), and its
launchers also set ``OMP_NUM_THREADS=1`` for child processes.

CPython's full (oldest-generation) garbage collection walks every container object the process
holds: with the model, pandas, pydantic and botocore loaded that took 100-160 ms in the scoring
API, a stall every few seconds under load that every request in flight waited out (measured with
a `gc.callbacks` probe, endpoint mode at 1,000 req/s). A server therefore freezes what it built
at startup (`freeze_startup_heap`): the collector skips it, and a full collection only walks what
was allocated since. The cost: frozen objects are still freed by reference counting, but cyclic
garbage among them is never collected; at most the model loaded at startup, once replaced.
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

