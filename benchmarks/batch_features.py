"""Batch feature throughput at scale: seconds, events/s and driver peak RSS of each feature step.

    .venv/bin/python benchmarks/batch_features.py --events 1000000 --checksums /tmp/local.json
    .venv/bin/python benchmarks/batch_features.py --events 1000000 --cluster --baselines none \
        --expect /tmp/local.json

Builds a fresh lake under a temporary INTENT_HOME with the simulator (about 6.3 events per
session), then materializes the graph step by step in-process, as `make demo` does, timing each
step. In the same run, the driver-side implementations (validation a day at a time in the
driver, snapshots replayed per day in one process, Feast's file offline store joining in pandas)
are timed on the same lake and their tables compared with the Spark steps' by checksum.
`--cluster` starts a standalone master and worker on loopback (as `intent stack up` does) and
runs there; `--checksums`/`--expect` prove two runs wrote the same tables. Driver peak RSS is the high-water mark
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


def jvm_pid() -> int | None:
    """The driver JVM's pid once a Spark session has started it."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None) if gateway else None
    return proc.pid if proc else None


def start_cluster(directory: Path, cores: int, memory: str):
    """A standalone master and one worker on loopback, as `intent stack up` starts them."""
    from intent_resources.stack_parts import start_spark
    from intent_resources.stack_processes import free_ports

    master, ui, worker_ui = free_ports(3)
    parts = start_spark(directory, {"spark_master": master, "spark_master_ui": ui,
                                    "spark_worker_ui": worker_ui}, dict(os.environ),
                        worker_cores=cores, worker_memory=memory)
    return parts[0].address, [pid for part in parts for pid in part.pids]


# Tables the steps write, compared across runs and against the baselines by checksum.
TABLES = ("raw_clickstream", "quarantine_clickstream", "orders", "sessions", "user_features",
          "product_features", "session_snapshots", "session_features", "training_set")


def table_checksums(spark, lake, tables=TABLES) -> dict[str, list]:
    """Rows and an order-free checksum of each table (numbers as doubles to 6 decimals, so a
    count stored as an integer by one writer and as a double by another compares equal; the
    partition day included), computed by Spark: nothing is read into the driver."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import NumericType

    out = {}
    for table in tables:
        days = lake.partitions(table)
        if not days and not lake.exists(table):
            continue
        paths = [lake.spark_uri(table, d) for d in days] or [lake.spark_uri(table)]
        frame = spark.read.parquet(*paths)
        columns = [F.round(F.col(f"`{f.name}`").cast("double"), 6)
                   if isinstance(f.dataType, NumericType) else F.col(f"`{f.name}`")
                   for f in sorted(frame.schema.fields, key=lambda f: f.name)]
        day = F.regexp_extract(F.col("_metadata.file_path"), r"date=([^/]+)", 1)
        row = frame.agg(F.count("*").alias("n"),
                        F.sum(F.xxhash64(day, *columns).cast("decimal(38,0)")).alias("h")).first()
        out[table] = [int(row["n"]), str(row["h"])]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--home", default=None, help="state dir (default: a temporary one)")
    parser.add_argument("--master", default="local[2]",
                        help="Spark master: local[2], or a standalone cluster's spark://host:port")
    parser.add_argument("--cluster", action="store_true",
                        help="start a standalone master + one worker on loopback and run on it")
    parser.add_argument("--worker-cores", type=int, default=2)
    parser.add_argument("--baselines", default="ingest,snapshots,join",
                        help="today's implementations to time on the same lake, comma-separated "
                             "(ingest: validation in the driver; snapshots: one process per day; "
                             "join: Feast's pandas join), or 'none'")
    parser.add_argument("--checksums", default=None, help="write the tables' checksums here (JSON)")
    parser.add_argument("--expect", default=None,
                        help="a --checksums file of another run: fail unless the tables are equal")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    baselines = set() if args.baselines == "none" else set(args.baselines.split(","))

    home = Path(args.home or tempfile.mkdtemp(prefix="intent-bench-"))
    os.environ["INTENT_HOME"] = str(home)
    sessions_per_day = int(args.events / args.days / EVENTS_PER_SESSION)
    os.environ["INTENT_SESSIONS_PER_DAY"] = str(sessions_per_day)
    cluster_pids: list[int] = []
    if args.cluster:
        from intent_resources.spark import prepare_spark_environment

        prepare_spark_environment()
        args.master, cluster_pids = start_cluster(home / "spark-cluster", args.worker_cores,
                                                  f"{args.worker_cores * 2}g")
    try:
        run(args, home, sessions_per_day, baselines)
    finally:
        if cluster_pids:
            from intent_resources.stack_processes import stop_pids

            stop_pids(cluster_pids)


def run(args, home: Path, sessions_per_day: int, baselines: set[str]) -> None:
    import json

    from dagster import DagsterInstance, materialize

    from intent_assets.commands import demo_partition_range
    from intent_assets.definitions import build_definitions
    from intent_assets.features.feast_ops import build_training_set
    from intent_assets.features.snapshots import day_snapshots
    from intent_assets.ingest.source import arrived_events
    from intent_assets.ingest.spark_ingest import ingest_and_write
    from intent_resources.redis import ensure_local_redis
    from pyspark.sql import SparkSession

    from intent_resources.spark import LOCAL_SPARK_CONFIG, SparkResource, prepare_spark_environment
    from intent_resources.storage import LakeStorage

    os.environ.setdefault("REDIS_URL", ensure_local_redis(home))
    defs = build_definitions("local")
    spark_config = {**LOCAL_SPARK_CONFIG, "spark.master": args.master,
                    **({} if args.master.startswith("local") else {"spark.executor.memory": "3g"})}
    resources = {**defs.resources, "spark": SparkResource(spark_config=spark_config)}
    # the session (and its JVM) first, so that the first step's peak counts the JVM too; the
    # resource's getOrCreate picks this one up
    prepare_spark_environment()
    builder = SparkSession.builder
    for key, value in spark_config.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    assets = {key.to_user_string(): a for a in defs.assets for key in getattr(a, "keys", [])}
    start, end = demo_partition_range(None, args.days)
    tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
    instance = DagsterInstance.ephemeral()
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    rows: list[tuple[str, float, list[float], float]] = []

    def timed(name: str, run) -> None:
        with PeakRss([os.getpid(), jvm_pid()]) as rss:
            t0 = time.perf_counter()
            run()
            seconds = time.perf_counter() - t0
        load = os.getloadavg()[0]
        rows.append((name, seconds, rss.peaks, load))
        print(f"{name}: {seconds:.1f} s, peak RSS {', '.join(f'{p:,.0f}' for p in rss.peaks)} MB, "
              f"load {load:.1f}", flush=True)

    def step(names: list[str], partitioned: bool = True):
        def run():
            result = materialize(list(assets.values()), selection=names, resources=resources,
                                 instance=instance, run_config=quiet,
                                 tags=tags if partitioned else None)
            assert result.success, names
        return run

    print(f"simulating {args.days} days at {sessions_per_day} sessions/day under {home}, "
          f"Spark {args.master}", flush=True)
    timed("raw_clickstream (simulate + validate, Spark tasks)", step(["raw_clickstream"]))
    timed("orders + sessions (Spark)", step(["orders", "sessions"]))
    timed("user_features (Spark)", step(["user_features"]))
    timed("product_features (Spark)", step(["product_features"]))
    timed("session_snapshots (Spark, state machine in buckets)", step(["session_snapshots"]))
    timed("online_features (Feast materialize, last day)", step(["online_features"]))
    timed("training_set (Spark point-in-time join)", step(["training_set"], partitioned=False))
    new_rows = list(rows)
    lake = defs.resources["lake"]
    sums = table_checksums(spark, lake)
    events = sums["raw_clickstream"][0]
    if args.checksums:
        Path(args.checksums).write_text(json.dumps(sums, indent=1))
    if args.expect:
        want = json.loads(Path(args.expect).read_text())
        for table, got in sums.items():
            print(f"{table}: {got[0]:,} rows, equal to {args.expect}'s: {got == want.get(table)}")
        assert sums == want, "the tables differ from the other run's"

    days = lake.partitions("raw_clickstream")
    baseline = LakeStorage(root=str(home / "baseline_lake"))
    if "ingest" in baselines:
        clickstream = defs.resources["clickstream"]
        truth = LakeStorage(root=str(home / "baseline_oracle"))

        def ingest_in_driver():
            for day in days:  # as the asset did: one day at a time in the driver's pandas
                ingest_and_write(clickstream, baseline, truth, day)

        timed("raw_clickstream, today's: validated in the driver per day", ingest_in_driver)
    if "snapshots" in baselines:
        def snapshots_one_process():
            # as the asset did: the run's events and sessions read whole, then a loop over days
            events_all = lake.read("raw_clickstream", days)
            sessions_all = lake.read("sessions", days)
            for day in days:
                snaps, closed = day_snapshots(events_all, sessions_all, day)
                baseline.write(snaps, "session_snapshots", day)
                baseline.write(closed, "session_features", day)

        timed("session_snapshots, today's: one process per day", snapshots_one_process)
    if "join" in baselines:
        source = "session_snapshots" if "snapshots" in baselines else None
        feast = defs.resources["feast"]

        def feast_pandas_join():
            snapshots = (baseline if source else lake).read("session_snapshots")
            baseline.write(build_training_set(feast, snapshots), "training_set")

        timed("training_set, today's: Feast file store (pandas)", feast_pandas_join)
    if baselines:
        for table, got in table_checksums(spark, baseline).items():
            print(f"{table}: {got[0]:,} rows, equal to today's: {got == sums[table]}", flush=True)

    features = sum(s for name, s, _, _ in new_rows if not name.startswith("raw_clickstream"))
    print(f"\n{events:,} events over {args.days} days, Spark {args.master}\n")
    print("| step | seconds | events/s | driver peak RSS, Python / JVM (MB) | load (1 min) |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, peaks, load in rows:
        rss = " / ".join(f"{p:,.0f}" for p in peaks)
        print(f"| {name} | {seconds:.1f} | {events / seconds:,.0f} | {rss} | {load:.1f} |")
    target = TARGET_SECONDS_PER_10M * events / 10_000_000
    print(f"| **feature assets, all steps after ingest** | **{features:.1f}** | "
          f"**{events / features:,.0f}** | | |")
    print(f"| target (DESIGN.md): 10 M events in ≤ 300 s | ≤ {target:.0f} | "
          f"≥ {10_000_000 / TARGET_SECONDS_PER_10M:,.0f} | | |")


if __name__ == "__main__":
    main()
