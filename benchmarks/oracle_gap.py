"""What limits the model: the demo's model beside the same model given the simulator's hidden truth.

    nice -n 10 flock -s /tmp/intent-cpu.lock .venv/bin/python benchmarks/oracle_gap.py --home .intent

Reads the training set and the oracle a demo left under `--home` (`make demo` first) and trains
the demo's model (LightGBM, the feature service's features, the same splits, tuning budget and
calibration) three times on the same rows:
- **the model**: the feature contract's features, what is published;
- **+ the user's propensity**: also the user's lasting propensity, which the simulator draws per
  user and the model can only infer from that user's history: the upper bound of what better
  user features could buy;
- **+ the session's true prior**: also the session's whole prior logit at its start (propensity,
  country, device, source, hour, target category and the hidden intent, which shows only through
  the events it causes): what no feature can ever hold.
Each is scored on the same test rows as the oracle (the simulator's true probability after the
cut event). Printed: test PR-AUC, ROC-AUC, log loss, ECE and PR-AUC / oracle PR-AUC.
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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PROPENSITY = "oracle_user_propensity"
PRIOR = "oracle_prior_logit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("INTENT_HOME", ".intent"),
                        help="the INTENT_HOME a demo ran in")
    parser.add_argument("--trials", type=int, default=3, help="Optuna trials (the demo's: 3)")
    parser.add_argument("--seed", type=int, default=0, help="the model's seed")
    parser.add_argument("--sessions-per-day", type=int, default=None,
                        help="the simulator's scale the demo ran with (default: the project's)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from intent_assets.ingest.simulator_world import build_world
    from intent_assets.ingest.source import simulator_config
    from intent_assets.reports.assets import oracle_probabilities
    from intent_assets.reports.metrics import evaluate
    from intent_assets.training.assets import LABEL, TIME_COLUMN
    from intent_assets.training.train import finish_model, fit_tuned
    from intent_resources.clickstream import ClickstreamSource
    from intent_resources.project_config import load_project_config
    from intent_resources.storage import LakeStorage
    from streaming_jobs.feature_spec import DEFAULT_SERVICE, service_features

    home = Path(args.home)
    lake, oracle = LakeStorage(root=str(home / "lake")), LakeStorage(root=str(home / "oracle"))
    if not lake.exists("training_set") or not oracle.partitions("oracle_sessions"):
        raise SystemExit(f"no training_set or oracle under {home}: run `make demo` first")
    frame = lake.read("training_set")
    truth = oracle.read("oracle_sessions")[["session_id", "prior"]].drop_duplicates("session_id")
    prior = truth["prior"].clip(1e-9, 1 - 1e-9)
    truth[PRIOR] = np.log(prior / (1 - prior))
    frame = frame.merge(truth[["session_id", PRIOR]], on="session_id", how="left")
    config = simulator_config(ClickstreamSource.from_config(load_project_config()))
    if args.sessions_per_day:
        config = type(config)(seed=config.seed, sessions_per_day=args.sessions_per_day)
    users = build_world(config).users.set_index("user_id")["propensity"]
    frame[PROPENSITY] = frame["user_id"].map(users)
    if frame[PROPENSITY].isna().any():
        raise SystemExit("some users are not in the simulator's world: pass the demo's "
                         "--sessions-per-day")
    unknown = frame[PRIOR].isna()
    if unknown.mean() > 0.01:
        raise SystemExit(f"{unknown.mean():.1%} of the training rows have no oracle session: "
                         "not a simulated demo?")
    # sessions begun the day before the first simulated day have no oracle row: left out of
    # every variant alike
    frame = frame[~unknown].reset_index(drop=True)
    contract = [spec.name for spec in service_features(DEFAULT_SERVICE)]
    print(f"training_set: {len(frame):,} rows ({int(unknown.sum()):,} without an oracle session "
          f"left out), {frame[LABEL].mean():.4f} positive; "
          f"{len(contract)} contract features; trials {args.trials}; "
          f"load average {os.getloadavg()[0]:.2f}")

    variants = {"the model (feature contract)": contract,
                "+ the user's propensity": [*contract, PROPENSITY],
                "+ the session's true prior": [*contract, PROPENSITY, PRIOR]}
    rows = []
    oracle_p = None
    with tempfile.TemporaryDirectory(prefix="intent-oracle-gap-") as tmp:
        for i, (name, features) in enumerate(variants.items()):
            started = time.perf_counter()
            tuned = fit_tuned(frame, LABEL, time_column=TIME_COLUMN, n_trials=args.trials,
                              seed=args.seed, regime="holdout", features=features,
                              feature_service=DEFAULT_SERVICE)
            result = finish_model(tuned, frame, Path(tmp) / str(i), versioned=False)
            test = result.test_predictions
            if oracle_p is None:
                oracle_p = oracle_probabilities(oracle, test["snapshot_id"])
                if oracle_p is None:
                    raise SystemExit("the oracle has no probability for some test rows")
                oracle_metrics = evaluate(test[LABEL].to_numpy(), oracle_p.to_numpy(),
                                          test["weight"].to_numpy())
            metrics = evaluate(test[LABEL].to_numpy(), test["probability"].to_numpy(),
                               test["weight"].to_numpy())
            rows.append({"predictor": name, **_headline(metrics),
                         "seconds": round(time.perf_counter() - started, 1)})
    rows.append({"predictor": "oracle (true probability)", **_headline(oracle_metrics)})
    table = pd.DataFrame(rows)
    table["pr_auc / oracle"] = (table["pr_auc"] / oracle_metrics["pr_auc"]).round(3)
    print(table.to_markdown(index=False))


def _headline(metrics: dict) -> dict:
    return {k: round(float(metrics[k]), 4) for k in ("pr_auc", "roc_auc", "log_loss", "ece")}


if __name__ == "__main__":
    main()
