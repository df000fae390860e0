"""Batch feature throughput at scale: seconds, events/s and driver peak RSS of each feature step.

    .venv/bin/python benchmarks/batch_features.py --events 10000000 --days 14
    .venv/bin/python benchmarks/batch_features.py --events 1000000 --master spark://127.0.0.1:7077

Builds a fresh lake under a temporary INTENT_HOME with the simulator (about 6.3 events per
session), then materializes the graph step by step in-process, as `make demo` does, timing each
step. In the same run, the one-process implementations of the two Python-heavy steps (snapshots
replayed per day in the driver, Feast's file offline store joining in pandas) are timed on the
same lake and their tables compared with the Spark steps'. Driver peak RSS is the high-water mark
of the Python driver and of Spark's driver JVM during the step (in `local[n]` the JVM also runs
the executors). Target (DESIGN.md): 10 M events of batch features in ≤ 5 min on 2 cores.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and benchmarks/serving.py would shadow
# the `serving` package: the repository root goes first instead.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EVENTS_PER_SESSION = 6.3
TARGET_SECONDS_PER_10M = 300.0


class PeakRss:
    """The high-water RSS of some processes over a block, in MB (Linux: VmHWM, reset per block)."""

    def __init__(self, pids):
        self.pids = [p for p in pids if p]
        self.peaks: list[float] = []

    @staticmethod
    def _hwm_mb(pid: int) -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def __enter__(self):
        for pid in self.pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return self

    def __exit__(self, *exc):
        self.peaks = [self._hwm_mb(pid) for pid in self.pids]


def jvm_pid(spark_resource) -> int | None:
    """The driver JVM's pid once the SparkResource has started it."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None) if gateway else None
    return proc.pid if proc else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--home", default=None, help="state dir (default: a temporary one)")
    parser.add_argument("--master", default="local[2]",
                        help="Spark master: local[2], or a standalone cluster's spark://host:port")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the one-process snapshots and Feast pandas join")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    home = Path(args.home or tempfile.mkdtemp(prefix="intent-bench-"))
    os.environ["INTENT_HOME"] = str(home)
    sessions_per_day = int(args.events / args.days / EVENTS_PER_SESSION)
    os.environ["INTENT_SESSIONS_PER_DAY"] = str(sessions_per_day)

    import pandas as pd
    from dagster import DagsterInstance, materialize

    from intent_assets.commands import demo_partition_range
    from intent_assets.definitions import build_definitions
    from intent_assets.features.feast_ops import build_training_set
    from intent_assets.features.snapshots import day_snapshots
    from intent_resources.redis import ensure_local_redis
    from intent_resources.spark import LOCAL_SPARK_CONFIG, SparkResource
    from intent_resources.storage import LakeStorage

    os.environ.setdefault("REDIS_URL", ensure_local_redis(home))
    defs = build_definitions("local")
    resources = {**defs.resources, "spark": SparkResource(spark_config={
        **LOCAL_SPARK_CONFIG, "spark.master": args.master,
        **({} if args.master.startswith("local") else {"spark.executor.memory": "3g"})})}
    assets = {key.to_user_string(): a for a in defs.assets for key in getattr(a, "keys", [])}
    start, end = demo_partition_range(None, args.days)
    tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
    instance = DagsterInstance.ephemeral()
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    rows: list[tuple[str, float, list[float]]] = []

    def timed(name: str, run) -> None:
        with PeakRss([os.getpid(), jvm_pid(resources["spark"])]) as rss:
            t0 = time.perf_counter()
            run()
            seconds = time.perf_counter() - t0
        rows.append((name, seconds, rss.peaks))
        print(f"{name}: {seconds:.1f} s, peak RSS {', '.join(f'{p:,.0f}' for p in rss.peaks)} MB",
              flush=True)

    def step(names: list[str], partitioned: bool = True):
        def run():
            result = materialize(list(assets.values()), selection=names, resources=resources,
                                 instance=instance, run_config=quiet,
                                 tags=tags if partitioned else None)
            assert result.success, names
        return run

    print(f"simulating {args.days} days at {sessions_per_day} sessions/day under {home}, "
          f"Spark {args.master}", flush=True)
    timed("raw_clickstream (simulate + validate)", step(["raw_clickstream"]))
    lake = defs.resources["lake"]
    days = lake.partitions("raw_clickstream")
    events = sum(len(lake.read("raw_clickstream", [d])) for d in days)
    timed("orders + sessions (Spark)", step(["orders", "sessions"]))
    timed("user_features (Spark)", step(["user_features"]))
    timed("product_features (Spark)", step(["product_features"]))
    timed("session_snapshots (Spark, state machine in buckets)", step(["session_snapshots"]))
    timed("online_features (Feast materialize, last day)", step(["online_features"]))
    timed("training_set", step(["training_set"], partitioned=False))
    new_rows = list(rows)

    if not args.no_baseline:
        baseline = LakeStorage(root=str(home / "baseline_lake"))
        feast = defs.resources["feast"]

        def snapshots_one_process():
            # as the asset did: the run's events and sessions read whole, then a loop over days
            events_all = lake.read("raw_clickstream", days)
            sessions_all = lake.read("sessions", days)
            for day in days:
                snaps, closed = day_snapshots(events_all, sessions_all, day)
                baseline.write(snaps, "session_snapshots", day)
                baseline.write(closed, "session_features", day)

        def feast_pandas_join():
            baseline.write(build_training_set(feast, baseline.read("session_snapshots")),
                           "training_set")

        timed("session_snapshots, today's: one process per day", snapshots_one_process)
        timed("training_set, today's: Feast file store (pandas)", feast_pandas_join)
        for table in ("session_snapshots", "session_features", "training_set"):
            got, want = lake.read(table), baseline.read(table)
            same = got.equals(want)
            print(f"{table}: {len(got):,} rows, equal to today's: {same}", flush=True)

    features = sum(s for name, s, _ in new_rows if not name.startswith("raw_clickstream"))
    print(f"\n{events:,} events over {args.days} days, Spark {args.master}\n")
    print("| step | seconds | events/s | driver peak RSS, Python / JVM (MB) |")
    print("|---|---:|---:|---:|")
    for name, seconds, peaks in rows:
        rss = " / ".join(f"{p:,.0f}" for p in peaks)
        print(f"| {name} | {seconds:.1f} | {events / seconds:,.0f} | {rss} |")
    target = TARGET_SECONDS_PER_10M * events / 10_000_000
    print(f"| **feature assets, all steps after ingest** | **{features:.1f}** | "
          f"**{events / features:,.0f}** | |")
    print(f"| target (DESIGN.md): 10 M events in ≤ 300 s | ≤ {target:.0f} | "
          f"≥ {10_000_000 / TARGET_SECONDS_PER_10M:,.0f} | |")


if __name__ == "__main__":
    main()
