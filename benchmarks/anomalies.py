"""Anomaly benchmark: the minute detector judged against planted incidents.

    .venv/bin/python benchmarks/anomalies.py [--quiet-days 7] [--sessions-per-day 20000]
    .venv/bin/python benchmarks/anomalies.py --fold-cost

Each planted incident (`intent_assets.ingest.simulator_incidents`) gets a simulated day of its
own; `--quiet-days` incident-free days follow. A day's events (and the two incident-free days
before's, for the baseline: the last two hours and the same hours the day before) are counted per
minute by `streaming_jobs.minute_aggregates` (the stream's own definition) and judged minute by
minute by `live_anomalies.judge_minute` and `Episodes`, as the sensor judges them: minute m once
the stream's clock reaches m + 1, so an alert is out at the end of minute m + 1 (the sensor's
own interval, a minute, comes on top). Events that arrive later than the end of the minute after
their own are left out, as the sensor would not have them yet.

Per incident: detected (an alert between its start and 15 minutes after its end), the first
alert's delay from the start in simulated minutes, its check and whether it names the
incident's segment. False alerts: alerts outside every incident window, per simulated day.
Targets (DESIGN.md): every kind within 10 minutes, at most one false alert a simulated week.
`--fold-cost` measures instead what counting the aggregates adds to the stream's stateful step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from functools import lru_cache
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from intent_assets.ingest.simulator import SimulatorConfig, simulate_day  # noqa: E402
from intent_assets.ingest.simulator_incidents import Incident  # noqa: E402
from intent_assets.monitoring.live_anomalies import (  # noqa: E402
    Episodes,
    LiveRules,
    Window,
    judge_minute,
)
from streaming_jobs.contract import split_duplicates, validate_events  # noqa: E402
from streaming_jobs.minute_aggregates import merge, minute_aggregates  # noqa: E402

FIRST_DAY = dt.date(2026, 9, 7)   # a Monday
AFTER_END_MIN = 15


def incidents(first_day: dt.date) -> list[Incident]:
    """Every kind twice, on its own day, in different segments and hours."""
    plan = [("bot_wave", "country", "IN", 10 * 60 + 7), ("bot_wave", "traffic_source", "referral", 15 * 60 + 41),
            ("card_testing", "country", "BR", 11 * 60 + 23), ("card_testing", "country", "PL", 19 * 60 + 2),
            ("tracking_outage", "device", "mobile", 9 * 60 + 48), ("tracking_outage", "country", "DE", 17 * 60 + 13),
            ("broken_checkout", "all", "all", 12 * 60 + 36), ("broken_checkout", "device", "desktop", 20 * 60 + 17),
            ("source_spike", "traffic_source", "paid_social", 13 * 60 + 51),
            ("source_spike", "traffic_source", "email", 18 * 60 + 29),
            ("price_feed_error", "category", "electronics", 10 * 60 + 54),
            ("price_feed_error", "category", "apparel", 16 * 60 + 8)]
    return [Incident(kind, first_day + dt.timedelta(days=2 * n + 1), start, 60, dim, value)
            for n, (kind, dim, value, start) in enumerate(plan)]


@lru_cache(maxsize=4)   # consecutive days share their days before
def sessions_counts(config: SimulatorConfig, day: dt.date) -> dict:
    """Per-minute aggregates of the sessions that start on `day`, as the stream counts them,
    minus what arrives after the end of the minute following its own. (A session's events all
    come from its start day's simulation, so days add up.)"""
    events = simulate_day(config, day).events
    clean = split_duplicates(validate_events(events).events).events
    minute = clean["event_time"].dt.floor("min")
    on_time = clean["received_time"] < minute + pd.Timedelta(minutes=2)
    return minute_aggregates(clean[on_time.to_numpy()])


def day_counts(config: SimulatorConfig, quiet: SimulatorConfig, day: dt.date) -> dict:
    """The aggregates the sensor reads on `day`: its sessions' and the two days before's (the
    baseline reaches back to the same hours the day before)."""
    counts: dict = {}
    for before in (2, 1):
        merge(counts, sessions_counts(quiet, day - dt.timedelta(days=before)))
    return merge(counts, sessions_counts(config, day))


def judge_day(counts: dict, day: dt.date, rules: LiveRules) -> list[dict]:
    """Every alert of the day's minutes, with the minute it is out (judged minute + 2)."""
    first = int(pd.Timestamp(day, tz="UTC").timestamp() // 60)
    window = Window.of(counts, first - rules.history_minutes, first + 1439)
    episodes, alerts = Episodes(), []
    for minute in range(first, first + 1440):
        for f in episodes.alerts(judge_minute(counts, minute, rules, window), minute, rules):
            alerts.append({**f, "out_minute": minute + 2 - first})
    return alerts


def score(incident: Incident, alerts: list[dict]) -> dict:
    start = incident.start_minute
    hits = [a for a in alerts if start <= a["out_minute"] - 1 < start + incident.minutes + AFTER_END_MIN]
    first = min(hits, key=lambda a: a["out_minute"]) if hits else None
    names = {f"{a['check']} {a['dimension']}={a['value']}" for a in hits}
    return {"kind": incident.kind, "segment": f"{incident.dimension}={incident.value}",
            "start": f"{start // 60:02d}:{start % 60:02d}", "detected": bool(hits),
            "minutes_to_detect": first["out_minute"] - start if first else None,
            "first_alert": f"{first['check']} {first['dimension']}={first['value']}" if first else "",
            "segment_named": any(f"{incident.dimension}={incident.value}" in n for n in names),
            "alerts": len(hits),
            "false_alerts": len(alerts) - len(hits),
            "false": "; ".join(f"{a['out_minute']}: {a['check']} {a['dimension']}={a['value']}"
                               for a in alerts if a not in hits)}


def fold_cost(config: SimulatorConfig, day: dt.date, rounds: int = 3) -> dict:
    """What counting the aggregates adds to the stream's stateful step: a day's events through
    `SessionFolder.update_bucket` in one-minute batches (by arrival), with the counting and with
    it replaced by a no-op, alternately; the best of `rounds` each."""
    from streaming_jobs import session_fold
    from streaming_jobs.prepare import pack_events
    from streaming_jobs.session_fold import REC, SessionFolder

    clean = split_duplicates(validate_events(simulate_day(config, day).events).events).events
    records = [list(r) for r in pack_events(clean)]
    minute = [r[REC["received_time"]] // 60_000_000 for r in records]
    batches, start = [], 0
    for i in range(1, len(records) + 1):
        if i == len(records) or minute[i] != minute[i - 1]:
            batches.append(records[start:i])
            start = i

    def run() -> float:
        folder, sessions, latest = SessionFolder(30 * 60_000), {}, 0
        t0 = time.perf_counter()
        for batch in batches:
            items: dict = {}
            for rec in batch:
                items.setdefault(rec[REC["session_id"]], []).append(rec)
            latest = max(latest, max(r[REC["event_time"]] for r in batch))
            folder.update_bucket(items, sessions, latest // 1000 - 20 * 60_000)
        return time.perf_counter() - t0

    real = session_fold.count_records
    with_counts, without = [], []
    try:
        for _ in range(rounds):
            session_fold.count_records = real
            with_counts.append(run())
            session_fold.count_records = lambda *a, **k: None
            without.append(run())
    finally:
        session_fold.count_records = real
    return {"events": len(records), "fold_s": round(min(without), 2),
            "fold_with_counts_s": round(min(with_counts), 2),
            "added": f"{min(with_counts) / min(without) - 1:+.1%}",
            "events_per_s_with_counts": round(len(records) / min(with_counts))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet-days", type=int, default=7)
    parser.add_argument("--sessions-per-day", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="write the rows here too")
    parser.add_argument("--incidents", type=int, nargs="*",
                        help="only these planted incidents (their numbers, 0-11)")
    parser.add_argument("--first-quiet-day", type=int, default=0,
                        help="start the incident-free days this many days later")
    parser.add_argument("--fold-cost", action="store_true",
                        help="only measure what counting adds to the stream's stateful step")
    args = parser.parse_args(argv)
    if args.fold_cost:
        config = SimulatorConfig(seed=args.seed, sessions_per_day=args.sessions_per_day)
        print(json.dumps({**fold_cost(config, FIRST_DAY), "load_avg": os.getloadavg()}))
        return 0
    rules = LiveRules()
    planted = incidents(FIRST_DAY)
    last = planted[-1].day
    if args.incidents is not None:
        planted = [planted[n] for n in args.incidents]
    quiet = SimulatorConfig(seed=args.seed, sessions_per_day=args.sessions_per_day)
    print(json.dumps({"sessions_per_day": args.sessions_per_day, "seed": args.seed,
                      "cores": os.cpu_count(), "load_avg": os.getloadavg()}), flush=True)
    rows, t0 = [], time.time()
    for incident in planted:
        config = SimulatorConfig(seed=args.seed, sessions_per_day=args.sessions_per_day,
                                 incidents=(incident,))
        alerts = judge_day(day_counts(config, quiet, incident.day), incident.day, rules)
        rows.append(score(incident, alerts))
        print(json.dumps(rows[-1]), flush=True)
    quiet_rows = []
    for n in range(args.first_quiet_day, args.first_quiet_day + args.quiet_days):
        day = last + dt.timedelta(days=n + 1)
        alerts = judge_day(day_counts(quiet, quiet, day), day, rules)
        quiet_rows.append({"day": str(day), "false_alerts": len(alerts),
                           "alerts": "; ".join(f"{a['out_minute']}: {a['check']} "
                                               f"{a['dimension']}={a['value']}" for a in alerts)})
        print(json.dumps(quiet_rows[-1]), flush=True)
    table = pd.DataFrame(rows, columns=["kind", "segment", "start", "detected",
                                        "minutes_to_detect", "first_alert", "segment_named",
                                        "alerts", "false_alerts", "false"])
    false_total = int(table["false_alerts"].sum()) + sum(r["false_alerts"] for r in quiet_rows)
    days = max(len(planted) + args.quiet_days, 1)
    print()
    print(table.drop(columns="false").to_markdown(index=False))
    print()
    print(f"false alerts: {false_total} in {days} simulated days "
          f"({false_total / days * 7:.2f} per simulated week; on the {args.quiet_days} "
          f"incident-free days: {sum(r['false_alerts'] for r in quiet_rows)}); "
          f"all kinds detected within 10 min: "
          f"{bool(table['detected'].all() and (table['minutes_to_detect'] <= 10).all())}; "
          f"{time.time() - t0:.0f} s, load average {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"incidents": rows, "quiet_days": quiet_rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
