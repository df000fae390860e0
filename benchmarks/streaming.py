"""Streaming benchmark: sustained events/s and event-to-Redis latency of the session job.

    .venv/bin/python benchmarks/streaming.py [--rates 5000 10000 20000 40000] [--seconds 15]

The job runs as it does in production, its own process (`python -m streaming_jobs.session_job`,
Spark local[2]), reading a landing directory; a real redis-server on a free port is the sink.
For each input rate, in rising order, simulated events are written as JSON-lines files (one
file per 100 ms) for `--seconds`; each file's events carry the moment it was written as their
`received_time`. The job's per-batch log gives, for every event, when its session's features
landed in Redis, so latency = landed - received (the file source's pick-up delay included).

A rate is sustained when the job drains the input within `--drain-grace` seconds after the
writer stops; once one is not, higher rates are skipped. Simulated days are replayed
compressed: a session's events arrive within milliseconds of each other instead of minutes,
so a batch holds most of a session's events (the "events/session/batch" column says how many).
Part of the stateful step's cost is per session per batch (its state is parsed and rewritten),
so real traffic, spread thinner, is harder; `--sessions-per-day` spreads it (more sessions, so
fewer events of each per batch). The job hashes sessions into `--state-buckets` state groups;
the first line printed is the configuration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from intent_assets.ingest.simulator import SimulatorConfig, simulate_day  # noqa: E402
from intent_resources.redis import start_redis_server, stop_redis_server  # noqa: E402
from streaming_jobs.replay import json_lines  # noqa: E402
from streaming_jobs.sinks import LATENCY_BUCKET_MS  # noqa: E402

PLACEHOLDER = "2000-01-01T00:00:00.000000Z"
TICK_S = 0.1


def events_for(total: int, first_day: dt.date, sessions_per_day: int) -> pd.DataFrame:
    """At least `total` simulated events from consecutive days, in arrival order."""
    parts, n, day = [], 0, first_day
    while n < total:
        ev = simulate_day(SimulatorConfig(seed=97, sessions_per_day=sessions_per_day), day).events
        parts.append(ev)
        n += len(ev)
        day += dt.timedelta(days=1)
    return pd.concat(parts, ignore_index=True).iloc[:total]


def render(events: pd.DataFrame) -> list[str]:
    """JSON lines with a placeholder received_time, replaced by the write time of each file."""
    return json_lines(events, pd.Timestamp(PLACEHOLDER))


def replay_at(lines: list[str], rate: int, seconds: float, landing: Path, tag: str) -> dict:
    """Write `rate * seconds` lines as one file per tick, paced to `rate`; returns timings."""
    per_tick = max(1, int(rate * TICK_S))
    t0 = time.monotonic()
    written = 0
    k = 0
    while written < len(lines):
        due = t0 + k * TICK_S
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        chunk = lines[written:written + per_tick]
        now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        name = f"{tag}-{k:06d}.jsonl"
        tmp = landing / f".{name}.tmp"
        tmp.write_text("\n".join(chunk).replace(PLACEHOLDER, now) + "\n")
        os.replace(tmp, landing / name)
        written += len(chunk)
        k += 1
    return {"start": t0, "end": time.monotonic(), "events": written,
            "achieved_rate": written / max(time.monotonic() - t0, 1e-9)}


def read_batches(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out[rec["batch_id"]] = rec  # a replayed batch: the last line wins
    return [out[k] for k in sorted(out)]


def percentile_from_hist(hist: dict, q: float) -> float | None:
    if not hist:
        return None
    keys = np.array(sorted(hist), dtype=np.int64)
    counts = np.array([hist[k] for k in keys], dtype=np.int64)
    cum = np.cumsum(counts)
    idx = int(np.searchsorted(cum, q / 100 * cum[-1]))
    return float(keys[min(idx, len(keys) - 1)] + LATENCY_BUCKET_MS / 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", type=int, nargs="+", default=[5_000, 10_000, 20_000, 40_000])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--drain-grace", type=float, default=10.0)
    p.add_argument("--trigger", default="0 seconds")
    p.add_argument("--sessions-per-day", type=int, default=100_000)
    p.add_argument("--state-store", choices=["hdfs", "rocksdb"], default="hdfs")
    p.add_argument("--state-buckets", type=int, default=64)
    p.add_argument("--shuffle-partitions", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="intent-stream-bench-"))
    landing = work / "landing"
    landing.mkdir()
    batch_log = work / "batches.jsonl"
    heartbeat = work / "heartbeat.json"
    print("config: " + json.dumps({
        "rates": args.rates, "seconds": args.seconds, "trigger": args.trigger,
        "state_store": args.state_store, "state_buckets": args.state_buckets,
        "shuffle_partitions": args.shuffle_partitions, "sessions_per_day": args.sessions_per_day,
        "master": "local[2]", "cores": os.cpu_count(), "load_avg": os.getloadavg()}), flush=True)
    need = int(sum(args.rates) * args.seconds)
    print(f"simulating {need} events ...", flush=True)
    events = events_for(need, dt.date(2026, 10, 1), args.sessions_per_day)
    lines = render(events)
    del events

    redis_url = start_redis_server(work / "redis")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    cmd = [sys.executable, "-m", "streaming_jobs.session_job", "--checkpoint",
           str(work / "checkpoint"), "--landing", str(landing), "--redis-url", redis_url,
           "--lake", str(work / "lake"), "--heartbeat", str(heartbeat), "--batch-log",
           str(batch_log), "--master", "local[2]",
           "--shuffle-partitions", str(args.shuffle_partitions),
           "--state-buckets", str(args.state_buckets),
           "--trigger", args.trigger, "--max-files-per-trigger", "100000",
           "--state-store", args.state_store]
    log = open(work / "job.log", "ab")
    job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        # warm up: the JVM, the Python workers, the first state store versions
        warm = replay_at(lines[:2000], 1000, 2.0, landing, "warmup")
        deadline = time.monotonic() + 180
        while sum(b["output_rows"] > 0 for b in read_batches(batch_log)) < 1:
            if job.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the job did not start; see {work / 'job.log'}")
            time.sleep(0.5)
        time.sleep(3)
        offset = warm["events"]
        results = []
        for rate in args.rates:
            n = int(rate * args.seconds)
            chunk = lines[offset:offset + n]
            offset += n
            before = {b["batch_id"] for b in read_batches(batch_log)}
            load = os.getloadavg()[0]
            w = replay_at(chunk, rate, args.seconds, landing, f"r{rate}")
            # wait for the job to take in everything written (or give up after the grace)
            deadline = time.time() + args.drain_grace + 120
            drained_at = None
            while time.time() < deadline:
                batches = [b for b in read_batches(batch_log) if b["batch_id"] not in before]
                # every input event is either applied (it has a latency) or quarantined
                accounted = sum(sum(b["latency_hist"].values()) + sum(b["quarantine"].values())
                                for b in batches)
                if accounted >= len(chunk):
                    drained_at = max(b["landed_at"] for b in batches)
                    break
                if job.poll() is not None:
                    raise RuntimeError(f"the job died; see {work / 'job.log'}")
                time.sleep(0.25)
            batches = [b for b in read_batches(batch_log) if b["batch_id"] not in before]
            hist: dict[int, int] = {}
            for b in batches:
                for k, v in b["latency_hist"].items():
                    hist[int(k)] = hist.get(int(k), 0) + v
            events_done = sum(hist.values())
            written_at_end = time.time() - (time.monotonic() - w["end"])
            lag = (drained_at - written_at_end) if drained_at else None
            sessions = sum(b["sessions_written"] + b["sessions_skipped"] for b in batches)
            busy = [b for b in batches if b["output_rows"]]
            span = (max(b["landed_at"] for b in busy) - (written_at_end - (w["end"] - w["start"]))
                    if busy else None)
            sustained = lag is not None and lag <= args.drain_grace
            results.append({
                "input rate": rate,
                "written/s": round(w["achieved_rate"]),
                "processed/s": round(events_done / span) if span else 0,
                "p50 ms": percentile_from_hist(hist, 50),
                "p95 ms": percentile_from_hist(hist, 95),
                "batches": len(busy),
                "events/session/batch": round(events_done / sessions, 2) if sessions else None,
                "drain lag s": None if lag is None else round(lag, 1),
                "sustained": sustained,
                "load avg": round(load, 2),
            })
            print(json.dumps(results[-1]), flush=True)
            if not sustained:
                break
        print()
        print(pd.DataFrame(results).to_string(index=False))
        print(f"\nload average at the end: {os.getloadavg()}; cores: {os.cpu_count()}")
    finally:
        os.killpg(job.pid, signal.SIGTERM)
        try:
            job.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
        stop_redis_server(redis_url)
        log.close()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
