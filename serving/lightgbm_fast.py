"""LightGBM's single-row C fast path, called through ctypes on LightGBM's private `_LIB`.

`Booster.predict` on a one-row matrix pays input checks and an OpenMP fan-out per call: in its
place a /score costs ~40-90 µs more API CPU (10-20 %) and its p50 rises from ~0.6 to 0.8-1.3 ms
at 1,000 req/s (`python benchmarks/serving.py --sections score`, with and without it).
"""

from __future__ import annotations

import ctypes

import lightgbm as lgb
import numpy as np

_PREDICT_RAW_SCORE = 1
_PREDICT_LEAF_INDEX = 2
_DTYPE_FLOAT64 = 1


class RowScorer:
    """One row's raw margin or leaf indices through LightGBM's fast-path handles, one thread.

    The handles are set up once per prediction type; LightGBM holds a lock inside the call and
    every call gets its own output buffer, so threads may share a scorer.
    """

    def __init__(self, booster: lgb.Booster, n_features: int) -> None:
        from lightgbm.basic import _LIB, _safe_call

        self._lib, self._check = _LIB, _safe_call
        self._booster = booster  # the handles point into it: keep it alive as long as they are
        self._n = n_features
        self._n_trees = booster.num_trees()
        self._raw = self._init(_PREDICT_RAW_SCORE)
        self._leaves = self._init(_PREDICT_LEAF_INDEX)

    def _init(self, predict_type: int) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
            self._booster._handle, ctypes.c_int(predict_type), ctypes.c_int(0),
            ctypes.c_int(-1), ctypes.c_int(_DTYPE_FLOAT64), ctypes.c_int32(self._n),
            ctypes.c_char_p(b"num_threads=1"), ctypes.byref(handle)))
        return handle

    def _call(self, handle: ctypes.c_void_p, row: np.ndarray, size: int) -> np.ndarray:
        out = np.empty(size, dtype=np.float64)
        out_len = ctypes.c_int64()
        self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFast(
            handle, ctypes.c_void_p(row.ctypes.data), ctypes.byref(out_len),
            ctypes.c_void_p(out.ctypes.data)))
        return out

    def raw(self, row: np.ndarray) -> float:
        return float(self._call(self._raw, row, 1)[0])

    def leaves(self, row: np.ndarray) -> np.ndarray:
        """The leaf each tree sends the row to."""
        return self._call(self._leaves, row, self._n_trees).astype(np.int64)

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        for name in ("_raw", "_leaves"):
            handle = getattr(self, name, None)
            if handle is not None and handle.value:
                lib.LGBM_FastConfigFree(handle)

