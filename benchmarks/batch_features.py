"""Batch feature throughput at scale: events/s of each feature asset, and Feast materialize time.

    .venv/bin/python benchmarks/batch_features.py --events 10000000 --days 14

Builds a fresh lake under a temporary INTENT_HOME with the simulator (about 6.3 events per
session), then materializes the graph step by step in-process, as `make demo` does, timing each
step. Target (DESIGN.md): 10 M events of batch features in ≤ 5 min on this 2-core box.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--home", default=None, help="state dir (default: a temporary one)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    home = Path(args.home or tempfile.mkdtemp(prefix="intent-bench-"))
    os.environ["INTENT_HOME"] = str(home)
    sessions_per_day = int(args.events / args.days / EVENTS_PER_SESSION)
    os.environ["INTENT_SESSIONS_PER_DAY"] = str(sessions_per_day)

    from dagster import DagsterInstance, materialize

    from intent_assets.commands import demo_partition_range
    from intent_assets.definitions import build_definitions
    from intent_resources.redis import ensure_local_redis

    os.environ.setdefault("REDIS_URL", ensure_local_redis(home))
    defs = build_definitions("local")
    assets = {key.to_user_string(): a for a in defs.assets for key in getattr(a, "keys", [])}
    start, end = demo_partition_range(None, args.days)
    tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
    instance = DagsterInstance.ephemeral()
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    def step(names: list[str], partitioned: bool = True) -> float:
        t0 = time.perf_counter()
        result = materialize(list(assets.values()), selection=names, resources=defs.resources,
                             instance=instance, run_config=quiet, tags=tags if partitioned else None)
        assert result.success, names
        return time.perf_counter() - t0

    print(f"simulating {args.days} days at {sessions_per_day} sessions/day under {home}")
    timings = {"raw_clickstream (simulate + validate)": step(["raw_clickstream"])}
    lake = defs.resources["lake"]
    events = sum(len(lake.read("raw_clickstream", [d])) for d in lake.partitions("raw_clickstream"))
    timings["orders + sessions (Spark)"] = step(["orders", "sessions"])
    timings["user_features (Spark)"] = step(["user_features"])
    timings["product_features (Spark)"] = step(["product_features"])
    timings["session_snapshots (state machine replay)"] = step(["session_snapshots"])
    timings["online_features (Feast materialize, last day)"] = step(["online_features"])
    timings["training_set (Feast point-in-time join)"] = step(["training_set"], partitioned=False)

    features = sum(v for k, v in timings.items() if not k.startswith("raw_clickstream"))
    print(f"\n{events:,} events over {args.days} days\n")
    print("| step | seconds | events/s |")
    print("|---|---:|---:|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.1f} | {events / seconds:,.0f} |")
    target = TARGET_SECONDS_PER_10M * events / 10_000_000
    print(f"| **feature assets, all steps after ingest** | **{features:.1f}** | **{events / features:,.0f}** |")
    print(f"| target (DESIGN.md): 10 M events in ≤ 300 s | ≤ {target:.0f} | ≥ {10_000_000 / TARGET_SECONDS_PER_10M:,.0f} |")
    training = lake.read("training_set")
    print(f"\ntraining_set: {len(training):,} rows; user_features rows: "
          f"{sum(len(lake.read('user_features', [d])) for d in lake.partitions('user_features')):,}")


if __name__ == "__main__":
    main()
