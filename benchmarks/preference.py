"""The category-preference figures of docs/uplift.md: recall@k and NDCG@k against popularity.

    .venv/bin/python benchmarks/preference.py

The same function and defaults as the `upsell_preference` asset: the prior and the weights
fitted on the earlier simulated days, both rankings evaluated on the later ones. Prints the
markdown table, the seconds it took, and the API's added CPU per request: the session signals
read out of the stored session state, and the ranking.
"""

import argparse
import datetime as dt
import itertools
import sys
import time
from pathlib import Path

import numpy as np

# Run as a script, this folder comes first on sys.path, and benchmarks/serving.py would shadow
# the `serving` package: the repository root goes first instead.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from intent_assets.uplift.assets import PreferenceConfig

    defaults = PreferenceConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default=defaults.start)
    parser.add_argument("--train-days", type=int, default=defaults.train_days)
    parser.add_argument("--test-days", type=int, default=defaults.test_days)
    parser.add_argument("--sessions-per-day", type=int, default=defaults.sessions_per_day)
    parser.add_argument("--save", default=None, help="directory to save the ranker in "
                        "(INTENT_PREFERENCE_PATH of an API to benchmark)")
    args = parser.parse_args()

    from intent_assets.ingest.simulator_world import SimulatorConfig
    from intent_assets.uplift.preference import report_markdown, train_preference

    t0 = time.perf_counter()
    start = dt.date.fromisoformat(args.start)
    report = train_preference(SimulatorConfig(sessions_per_day=args.sessions_per_day), start,
                              args.train_days, args.test_days, defaults.seed, defaults.k)
    seconds = time.perf_counter() - t0
    print(report_markdown(report))
    print(f"\nSeconds: {seconds:.1f}")
    if args.save:
        report.ranker.save(args.save)

    # the API's added work per request: the session signals out of the stored state (a request
    # without an event; one with an event gets them from the fold) and the ranking
    import orjson

    from intent_assets.ingest.simulator import simulate_day
    from intent_assets.uplift.preference import clean_events
    from serving.preference import stored_signals
    from streaming_jobs.session_state import apply_event, new_state, to_dict

    day = start + dt.timedelta(days=args.train_days)
    events = clean_events(simulate_day(SimulatorConfig(sessions_per_day=args.sessions_per_day),
                                       day).events)
    events = events.sort_values(["session_id", "event_time", "event_id"], kind="stable")
    stored = []
    for _, rows in itertools.islice(events.groupby("session_id", sort=False), 2000):
        state = new_state()
        for record in rows.to_dict("records"):
            apply_event(state, record)
        stored.append(orjson.dumps(to_dict(state)))
    ranker = report.ranker
    signals = [stored_signals(raw) for raw in stored]
    for label, work in (("CategoryRanker.recommend", lambda raw, sig: ranker.recommend(*sig)),
                        ("stored_signals + recommend",
                         lambda raw, sig: ranker.recommend(*stored_signals(raw)))):
        t0 = time.perf_counter_ns()
        for raw, signal in zip(stored, signals):
            work(raw, signal)
        per = (time.perf_counter_ns() - t0) / 1000 / len(stored)
        print(f"{label}: {per:.1f} µs per request (mean of {len(stored)} sessions' final "
              f"states, median {int(np.median([len(r) for r in stored]))} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
