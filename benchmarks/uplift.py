"""The uplift figures of docs/uplift.md: the model's report and the three-arm offer-policy readout.

    .venv/bin/python benchmarks/uplift.py --log-sessions 40000 --ab-sessions 120000 --out docs

The same functions as the `uplift` assets (what `make demo` materializes), with the same
defaults: the uplift simulator's randomized exploration log, the cross-fitted DR-learner,
its held-out report, and the simulated A/B of rules vs propensity bands vs the uplift policy.
Prints both markdown tables and the seconds each step took, writes the two plots to `--out`, and
times the API's offer decision per request: bands vs the uplift policy vs the exploration slice.
"""

import argparse
import sys
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and benchmarks/serving.py would shadow
# the `serving` package: the repository root goes first instead.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-sessions", type=int, default=40_000)
    parser.add_argument("--ab-sessions", type=int, default=120_000)
    parser.add_argument("--budget", type=float, default=0.20)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()

    from intent_assets.uplift.evaluate import plot_report
    from intent_assets.uplift.policies_ab import plot_readout, readout, readout_markdown, \
        simulate_policies
    from intent_assets.uplift.simulator import exploration_log
    from intent_assets.uplift.train import report_markdown, train_uplift_model
    from serving.policy import PolicyParams

    out = Path(args.out)
    t0 = time.perf_counter()
    log = exploration_log(args.log_sessions, seed=20)
    model, reports = train_uplift_model(log, seed=0, rounds=args.rounds)
    t1 = time.perf_counter()
    print(report_markdown(reports, model), "\n")
    primary = dict(list(reports.items())[:2])
    plot_report({k: dict(r.curves, deciles=r.deciles) for k, r in primary.items()},
                out / "uplift_qini.png")
    frame = simulate_policies(model, args.ab_sessions, 21, PolicyParams(discount_budget=args.budget))
    result = readout(frame, seed=21)
    t2 = time.perf_counter()
    print(readout_markdown(result, "offer_policies_v1"), "\n")
    shares = frame.groupby("arm")["action"].value_counts(normalize=True).unstack().round(3)
    print("actions per arm:\n", shares.to_markdown(), "\n")
    plot_readout(result, out / "uplift_readout.png")
    print(f"seconds: uplift model {t1 - t0:.1f}, three-arm A/B {t2 - t1:.1f}")
    decision_costs(model, log)
    return 0


def decision_costs(model, log, n: int = 5000) -> None:
    """Per-request cost of the offer decision in the API (`serving.offers.OfferChooser.decide`):
    propensity bands, the uplift policy, and the exploration slice, on the same rows."""
    import numpy as np

    from serving.offers import ExplorationSlice, OfferChooser

    rows = log.head(n).to_dict("records")
    choosers = {"bands": OfferChooser(),
                "uplift": OfferChooser(uplift=model, default_policy="uplift"),
                "exploration slice (share 1)": OfferChooser(exploration=ExplorationSlice(1.0))}
    print("| decision | p50 µs | p99 µs |\n|---|---|---|")
    for name, chooser in choosers.items():
        for row in rows[:200]:   # warm: the fast-path handles are set up on first use
            chooser.decide("u", row["session_id"], row, row["propensity"], None)
        times = np.empty(len(rows))
        for i, row in enumerate(rows):
            t = time.perf_counter()
            chooser.decide("u", row["session_id"], row, row["propensity"], None)
            times[i] = time.perf_counter() - t
        p50, p99 = np.quantile(times, [0.5, 0.99]) * 1e6
        print(f"| {name} | {p50:.0f} | {p99:.0f} |")


if __name__ == "__main__":
    raise SystemExit(main())
