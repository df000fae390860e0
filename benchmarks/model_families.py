"""Scoring latency per model family: one row (with reasons) and 1,000 rows, side by side.

    flock -x /tmp/intent-cpu.lock .venv/bin/python benchmarks/model_families.py --trials 3

Every family is trained by `intent train --families all` (the same code, in process) on one
simulator session table (`small_tables.simulator_table`, ~20k rows, session features only), then
each artifact is loaded as the container loads it (`ModelArtifact.load` of its model.tar.gz) and
timed, one thread, on the test split's rows:
- one row, top 3 reasons: `score_one`, the container's path for a single-row invocation;
- one row, no reasons: `score_one(top_k=0)`;
- 1,000 rows, top 3 reasons: `contract.score_rows`, what one invocation of 1,000 rows runs.
Printed: p50 and p99 per call, rows per second for the batch, the archive's size, test PR-AUC.
LightGBM is the baseline every family is read against, in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _timed(call, n: int) -> np.ndarray:
    call()
    took = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        took.append((time.perf_counter() - started) * 1e3)
    return np.array(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="Optuna trials per family")
    parser.add_argument("--rows", type=int, default=20_000, help="simulator table rows")
    parser.add_argument("--repeats", type=int, default=300, help="single-row calls timed")
    parser.add_argument("--batches", type=int, default=10, help="1,000-row calls timed")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from benchmarks.small_tables import simulator_table
    from intent_assets.training.compare import KNOWN_FAMILIES, compare_families
    from serving.contract import score_rows
    from serving.model import ModelArtifact

    table = simulator_table(args.rows)
    print(f"table: {len(table):,} rows, trials per family {args.trials}; "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="intent-families-") as tmp:
        summary = compare_families(table, "label", list(KNOWN_FAMILIES), Path(tmp),
                                   time_column="event_timestamp", weight_column="weight",
                                   group_column="session_id", n_trials=args.trials, seed=0,
                                   regime="holdout", feature_service="intent_model_v1")
        by_family = {row["family"]: row for row in summary["candidates"]}
        header = (f"{'family':<14} {'1 row+3 reasons p50/p99 ms':>27} {'1 row p50/p99 ms':>17} "
                  f"{'1,000 rows p50/p99 ms':>22} {'rows/s':>9} {'size KB':>8} {'PR-AUC':>7}")
        print(header)
        base = None
        for family, row in by_family.items():
            artifact = ModelArtifact.load(Path(tmp) / family / "model.tar.gz")
            records = table.sample(n=1000, random_state=1).to_dict("records")
            it = iter(range(10 ** 9))
            one = _timed(lambda: artifact.score_one(records[next(it) % 1000], top_k=3),
                         args.repeats)
            bare = _timed(lambda: artifact.score_one(records[next(it) % 1000], top_k=0),
                          args.repeats)
            batch = _timed(lambda: score_rows(artifact, records, top_k=3), args.batches)
            p50 = float(np.percentile(one, 50))
            base = base or p50
            print(f"{family:<14} {p50:>12.3f} / {np.percentile(one, 99):>8.3f} "
                  f"({p50 / base:4.1f}x) {np.percentile(bare, 50):>7.3f} / "
                  f"{np.percentile(bare, 99):>7.3f} {np.percentile(batch, 50):>10.1f} / "
                  f"{np.percentile(batch, 99):>9.1f} {1000 / np.percentile(batch, 50) * 1e3:>9,.0f} "
                  f"{row['artifact_kb']:>8.1f} {row['pr_auc']:>7.4f}")
    print(f"champion by the gates: {summary['champion']}; load average "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
