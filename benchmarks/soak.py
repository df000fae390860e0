"""Soak: `POST /score` at a fixed rate for minutes, in process and through the container.

`python benchmarks/soak.py [--minutes 10] [--rate 1000] [--modes in_process,endpoint]`

The API (one worker, real Redis filled through Feast, the synthetic model of
`benchmarks/serving.py`) takes open-loop load from a separate process, one generator run per
minute. Each minute reports the achieved rate, errors, p50/p99 and the resident memory (RSS) of
every server process: the API, its endpoint client processes, the container. The baseline is the
run's own first minute: a drift is the last minutes against it, and the least-squares slope per
minute. Afterwards the API's /metrics tells how many answers were fallbacks. Target (DESIGN):
10 minutes at 1,000 req/s, 0 errors, no upward drift of p99 or memory.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import (  # noqa: E402
    TOKEN,
    api_command,
    fill_online_store,
    http_requests,
    open_loop,
    score_bodies,
    start_process,
    stop_processes,
    synthetic_model,
    wait_http,
)


def rss_mb(pid: int) -> float:
    """Resident memory of one process (VmRSS), in MB; NaN once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        pass
    return float("nan")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def memory(processes: dict[str, int]) -> dict[str, float]:
    """RSS of each named server process, and of the API's child processes together."""
    out = {name: rss_mb(pid) for name, pid in processes.items()}
    if "api" in processes:
        kids = children(processes["api"])
        if kids:
            out["api children"] = sum(rss_mb(k) for k in kids)
    return out


def soak(port: int, requests: list[bytes], rate: float, minutes: int, minute_s: float,
         processes: dict[str, int]) -> list[dict]:
    open_loop(port, requests, rate, 5.0)  # warm up: connections, caches, allocator
    rows = []
    for minute in range(1, minutes + 1):
        row = open_loop(port, requests, rate, minute_s, server_pid=processes.get("api"))
        # the machine's load beside each minute: on shared cores it moves p99 more than we do
        row.update(minute=minute, rss=memory(processes), load=os.getloadavg()[0])
        rows.append(row)
        rss = ", ".join(f"{k} {v:.1f} MB" for k, v in row["rss"].items())
        kinds = ", ".join(f"{k} {v}" for k, v in row["error_kinds"].items() if v)
        print(f"  minute {minute}: {row['achieved']:.0f} req/s, p50 {row['p50_ms']:.2f} ms, "
              f"p99 {row['p99_ms']:.2f} ms, errors {row['errors']}{f' ({kinds})' if kinds else ''}"
              f"; RSS {rss}; load {row['load']:.1f}", flush=True)
    return rows


def slope(values: list[float]) -> float:
    """Least-squares change per minute."""
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values)), np.array(values), 1)[0])


def summary(rows: list[dict]) -> dict:
    p99 = [r["p99_ms"] for r in rows]
    tail = max(1, min(3, len(rows) // 3))
    out = {"sent": sum(r["sent"] for r in rows), "errors": sum(r["errors"] for r in rows),
           "p99_first_ms": p99[0], "p99_last_ms": float(np.median(p99[-tail:])),
           "p99_slope_ms_per_min": slope(p99), "p50_median_ms": float(np.median(
               [r["p50_ms"] for r in rows])), "memory": {}}
    for name in rows[0]["rss"]:
        series = [r["rss"].get(name, float("nan")) for r in rows]
        out["memory"][name] = {"first_mb": series[0], "last_mb": series[-1],
                               "growth_mb": series[-1] - series[0],
                               "slope_mb_per_min": slope(series)}
    return out


def fallbacks(api_port: int) -> dict[str, float]:
    """The API's fallback and failure counters (its /metrics) after the run."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("intent_score_fallbacks_total", "intent_score_errors_total"):
                out[f"{s.name.removeprefix('intent_score_').removesuffix('_total')}:"
                    f"{s.labels.get('kind')}"] = s.value
    return out


def table(rows: list[dict]) -> str:
    names = list(rows[0]["rss"])
    lines = ["| minute | achieved req/s | p50 ms | p99 ms | max ms | errors | "
             + " | ".join(f"RSS {n} MB" for n in names) + " | load avg |",
             "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(names) + "---:|"]
    for r in rows:
        lines.append(f"| {r['minute']} | {r['achieved']:.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['errors']} | "
                     + " | ".join(f"{r['rss'].get(n, float('nan')):.1f}" for n in names)
                     + f" | {r['load']:.1f} |")
    return "\n".join(lines)


def verdict(s: dict, minute_s: float) -> str:
    memory_text = "; ".join(
        f"{name} {m['first_mb']:.1f} → {m['last_mb']:.1f} MB ({m['growth_mb']:+.1f} MB, "
        f"{m['slope_mb_per_min']:+.2f} MB/min)" for name, m in s["memory"].items())
    return (f"\n{s['sent']:,} requests, {s['errors']} errors; p99 first minute "
            f"{s['p99_first_ms']:.2f} ms, last minutes {s['p99_last_ms']:.2f} ms, slope "
            f"{s['p99_slope_ms_per_min']:+.3f} ms/min; median p50 {s['p50_median_ms']:.2f} ms "
            f"(minutes of {minute_s:.0f} s)\nRSS: {memory_text}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--modes", default="in_process,endpoint",
                        help="in_process (model in the API), endpoint (through the container)")
    parser.add_argument("--minute-seconds", type=float, default=60.0,
                        help="length of one reporting interval (shorter for a quick try)")
    args = parser.parse_args(argv)
    # stopped with SIGTERM, the servers and Redis are still cleaned up (the `finally` below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    modes = args.modes.split(",")
    if not modes or not set(modes) <= {"in_process", "endpoint"}:
        parser.error(f"--modes: in_process and/or endpoint, got {args.modes!r}")

    from intent_resources.feast import FeastResource
    from intent_resources.redis import start_redis_server, stop_redis_server
    from serving.local import install_model
    from serving.project import free_port
    from serving.runtime import SERVER_ENVIRONMENT

    work = Path(tempfile.mkdtemp(prefix="intent-soak-"))
    rng = np.random.default_rng(0)
    tar = synthetic_model(work / "model")
    model_dir = work / "endpoint_model"
    install_model(tar, model_dir)
    redis_url = start_redis_server(work / "redis")
    processes: list[subprocess.Popen] = []
    report = [f"# soak: POST /score at {args.rate:.0f} req/s for {args.minutes} x "
              f"{args.minute_seconds:.0f} s ({os.cpu_count()} cores)"]
    try:
        resource = FeastResource(repo_path=str(ROOT / "feature_repo"), env="local",
                                 redis_url=redis_url, lake_root=str(work / "lake"),
                                 home=str(work / "home"))
        resource.apply()
        ids = fill_online_store(resource.store(), rng)
        # Feast sets PROMETHEUS_MULTIPROC_DIR on import; the servers do not run that way
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
        env = {**env, **SERVER_ENVIRONMENT, "INTENT_API_TOKEN": TOKEN,
               "INTENT_HOME": str(work / "home"), "INTENT_DECISION_LOG_DIR": str(work / "log")}
        bodies = http_requests("/score", score_bodies(ids, rng),
                               {"Authorization": f"Bearer {TOKEN}"})
        for mode in modes:
            servers: dict[str, int] = {}
            extra: list[str] = []
            if mode == "endpoint":
                port = free_port()
                processes.append(start_process(
                    [sys.executable, "-m", "serving.container", "serve", "--model-dir",
                     str(model_dir), "--host", "127.0.0.1", "--port", str(port)], env,
                    work / "container.log"))
                wait_http(f"http://127.0.0.1:{port}/ping")
                servers["container"] = processes[-1].pid
                extra = ["--mode", "endpoint", "--endpoint-url", f"http://127.0.0.1:{port}"]
            api_port = free_port()
            processes.append(start_process(api_command(api_port, 1, model_dir, redis_url) + extra,
                                           env, work / f"api_{mode}.log"))
            wait_http(f"http://127.0.0.1:{api_port}/health")
            servers["api"] = processes[-1].pid
            title = ("model in process" if mode == "in_process" else
                     "through the container (API -> boto3 client process -> container)")
            print(f"\n## {title}", flush=True)
            rows = soak(api_port, bodies, args.rate, args.minutes, args.minute_seconds, servers)
            counters = fallbacks(api_port)
            section = [f"\n## POST /score, {title}\n", table(rows),
                       verdict(summary(rows), args.minute_seconds),
                       "API counters after the run: "
                       + (", ".join(f"{k} {v:.0f}" for k, v in sorted(counters.items()))
                          or "no fallbacks, no failures")]
            print("\n".join(section[2:]), flush=True)
            report += section
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(10)
            processes.clear()
        load = os.getloadavg()
        report.append(f"\nload average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        (work / "report.md").write_text("\n".join(report) + "\n")
        print(report[-1])
        print(f"\nreport: {work / 'report.md'}")
    finally:
        stop_processes(processes)
        stop_redis_server(redis_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
