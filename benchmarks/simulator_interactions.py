"""What the simulator's interactions do to a tree model against logistic regression, one row each.

    flock -s /tmp/intent-cpu.lock .venv/bin/python benchmarks/simulator_interactions.py
    .venv/bin/python benchmarks/simulator_interactions.py --days 7 --variants all,none

Per simulator variant (`SimulatorConfig.interactions`: none, all, and all but each one), a
demo-sized training table is built from the project's own pieces: the simulated days
(`ingest.simulator`), contract-validated and deduplicated, sessions and orders by
`ingest.sessionize` and the user and product features by `features.batch`, both on one local
Spark, training snapshots by `features.snapshots.build_snapshots`. Batch rows join each cut as of
the previous day (the row Feast's point-in-time join hands it), missing ones take the feature
contract's default. Then the demo's training path on that table: `train.fit_tuned` +
`finish_model` (LightGBM, Optuna, the holdout regime, the demo's 3 trials) and the logistic
baseline `reports.baselines.fit_logistic_baseline`, both judged on the model's test split with
the simulator's oracle beside them.

`--upper-bound` adds, for the full simulator, the model without the history features of
`HISTORY_FEATURES` (lifetime sessions, shrunk rate, recency-weighted counts), and the model also
given the hidden per-user propensity (`user_true_propensity`) and, further, the session's hidden
intent too: what better user features (or anything) could buy at most. Prints one row per run and a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and benchmarks/serving.py would shadow
# the `serving` package: the repository root goes first instead.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

FIRST_DAY = dt.date(2026, 10, 1)
LABEL, TIME = "label", "event_timestamp"


def spark_session():
    from pyspark.sql import SparkSession

    from intent_resources.spark import LOCAL_SPARK_CONFIG, prepare_spark_environment

    prepare_spark_environment()
    builder = SparkSession.builder
    for key, value in {**LOCAL_SPARK_CONFIG, "spark.master": "local[2]"}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def simulated(config, days: int):
    """Clean events of the days (and the spill into the next), the oracle, the catalog."""
    from intent_assets.ingest.simulator import events_on, oracle_on
    from intent_assets.ingest.simulator_world import build_world
    from streaming_jobs.contract import split_duplicates, validate_events

    parts, oracle_e, oracle_s = [], [], []
    for i in range(days + 1):
        day = FIRST_DAY + dt.timedelta(days=i)
        parts.append(events_on(config, day))
        if i < days:
            e, s = oracle_on(config, day)
            oracle_e.append(e[["event_id", "p_true"]])
            oracle_s.append(s)
    events = split_duplicates(validate_events(pd.concat(parts, ignore_index=True)).events).events
    products = build_world(config).products
    return (events, pd.concat(oracle_e, ignore_index=True), pd.concat(oracle_s, ignore_index=True),
            products[["product_id", "margin"]])


def training_table(spark, config, days: int, work: Path):
    """The demo's training table for `config`, and the oracle's p_true and session truth."""
    from intent_assets.features.batch import product_features, user_features
    from intent_assets.features.snapshots import build_snapshots
    from intent_assets.ingest.sessionize import build_orders, build_sessions
    from streaming_jobs.feature_spec import PRODUCT_FEATURES, USER_FEATURES

    events, oracle_events, oracle_sessions, catalog = simulated(config, days)
    names = [(FIRST_DAY + dt.timedelta(days=i)).isoformat() for i in range(days)]
    path = work / "events.parquet"
    events.drop(columns=["extra"]).to_parquet(path)
    sdf = spark.read.parquet(str(path))
    sessions = build_sessions(sdf, names).cache()
    orders = build_orders(sdf)
    users = user_features(orders, sessions, sdf, names).toPandas()
    products = product_features(sdf, spark.createDataFrame(catalog), names,
                                sessions=sessions).toPandas()
    session_rows = sessions.toPandas()
    sessions.unpersist()

    snaps = build_snapshots(events.sort_values(["session_id", "event_time", "event_id"]),
                            session_rows)
    snaps = snaps[snaps["date"].isin(names)]
    as_of = (pd.to_datetime(snaps["event_timestamp"]).dt.floor("D")
             - pd.Timedelta(days=1)).dt.strftime("%Y-%m-%d")
    table = snaps.assign(_as_of=as_of.to_numpy())
    for rows, key, spec in ((users, "user_id", USER_FEATURES), (products, "product_id",
                                                                 PRODUCT_FEATURES)):
        cols = [name for name, _, _ in spec]
        right = rows[[key, "date", *cols]].rename(columns={"date": "_as_of"})
        table = table.merge(right, on=[key, "_as_of"], how="left")
        for name, kind, default in spec:
            if kind == "string" or default == default:   # NaN defaults stay missing
                table[name] = table[name].fillna(default)
    table = table.drop(columns="_as_of")
    p_true = table[["snapshot_id"]].merge(oracle_events.rename(columns={"event_id": "snapshot_id"})
                                          .drop_duplicates("snapshot_id"), how="left")["p_true"]
    truth = oracle_sessions[~oracle_sessions["is_bot"]]
    by_user = truth.drop_duplicates("user_id").set_index("user_id")["propensity"]
    by_session = truth.set_index("session_id")["hidden_intent"]
    table["user_true_propensity"] = table["user_id"].map(by_user).to_numpy()
    table["session_true_intent"] = table["session_id"].map(by_session).fillna(0.0).to_numpy()
    return table, p_true.to_numpy()


# The user features that summarize a longer, shrunk, recency-weighted history (issue 19, item 4).
HISTORY_FEATURES = ("user_sessions_lifetime", "user_purchase_rate_shrunk", "user_purchases_decayed",
                    "user_sessions_decayed")


def evaluate(table: pd.DataFrame, p_true: np.ndarray, extra: list[str], trials: int, work: Path,
             without: tuple[str, ...] = ()):
    from intent_assets.reports.baselines import fit_logistic_baseline
    from intent_assets.reports.metrics import SEGMENT_COLUMNS, ece, pr_auc, roc_auc, segment_metrics
    from intent_assets.training.train import finish_model, fit_tuned, training_splits
    from streaming_jobs.feature_spec import service_features

    features = [spec.name for spec in service_features() if spec.name not in without] + extra
    hidden = [c for c in ("user_true_propensity", "session_true_intent") if c not in extra]
    hidden += list(without)
    frame = table.drop(columns=hidden).assign(_p_true=p_true)
    t0 = time.perf_counter()
    tuned = fit_tuned(frame.drop(columns="_p_true"), LABEL, time_column=TIME, n_trials=trials,
                      regime="holdout", features=features)
    result = finish_model(tuned, frame.drop(columns="_p_true"), out_dir=work / "model")
    seconds = time.perf_counter() - t0
    test = result.test_predictions
    splits = training_splits(frame, LABEL, TIME)
    lr = fit_logistic_baseline(splits.train, LABEL, features, weight_column="weight")
    lr_test = splits.test.set_index("snapshot_id").loc[test["snapshot_id"]]
    y, w = test[LABEL].to_numpy(), test["weight"].to_numpy()
    p_lr = lr.predict(lr_test)
    oracle = lr_test["_p_true"].to_numpy()
    segments = lr_test[list(SEGMENT_COLUMNS)].reset_index(drop=True)

    def worst_segment(p):
        judged = [r for r in segment_metrics(y, p, w, segments) if r["enough_data"]]
        top = max(judged, key=lambda r: r["ece"])
        return top["ece"], f"{top['column'].removeprefix('session_')}={top['value']}"

    (tree_seg, tree_seg_at), (oracle_seg, oracle_seg_at) = (worst_segment(test["probability"]),
                                                            worst_segment(oracle))
    return {"tree_pr_auc": pr_auc(y, test["probability"], w), "lr_pr_auc": pr_auc(y, p_lr, w),
            "oracle_pr_auc": pr_auc(y, oracle, w),
            "tree_roc_auc": roc_auc(y, test["probability"], w), "lr_roc_auc": roc_auc(y, p_lr, w),
            "oracle_roc_auc": roc_auc(y, oracle, w), "test_rows": len(test),
            "tree_ece": ece(y, test["probability"], w), "oracle_ece": ece(y, oracle, w),
            "tree_worst_segment_ece": tree_seg, "tree_worst_segment": tree_seg_at,
            "oracle_worst_segment_ece": oracle_seg, "oracle_worst_segment": oracle_seg_at,
            "label_rate": float(np.average(y, weights=w)), "train_s": seconds}


def main() -> None:
    from intent_assets.ingest.simulator import SimulatorConfig
    from intent_assets.ingest.simulator_world import INTERACTIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--sessions-per-day", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variants", default="none,all," + ",".join(f"-{i}" for i in INTERACTIONS),
                        help="comma-separated: none, all, -NAME (all but NAME), +NAME (NAME only)")
    parser.add_argument("--upper-bound", action="store_true",
                        help="also train on the full simulator with its hidden user propensity "
                             "(and session intent) as features")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("INTENT_HOME", tempfile.mkdtemp(prefix="intent-interactions-"))

    def interactions(variant: str) -> tuple[str, ...]:
        if variant == "all":
            return INTERACTIONS
        if variant == "none":
            return ()
        name = variant[1:]
        if variant[0] == "-":
            return tuple(i for i in INTERACTIONS if i != name)
        return (name,)

    spark = spark_session()
    print(f"# {args.days} days x {args.sessions_per_day:,} sessions/day, seed {args.seed}, "
          f"{args.trials} trials; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for variant in args.variants.split(","):
        config = SimulatorConfig(seed=args.seed, sessions_per_day=args.sessions_per_day,
                                 interactions=interactions(variant))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            table, p_true = training_table(spark, config, args.days, Path(tmp))
            built = time.perf_counter() - t0
            runs = [("", [], ())]
            if args.upper_bound and variant == "all":
                runs += [(" without the history features", [], HISTORY_FEATURES),
                         (" + true user propensity", ["user_true_propensity"], ()),
                         (" + true propensity and intent",
                          ["user_true_propensity", "session_true_intent"], ())]
            for k, (suffix, extra, without) in enumerate(runs):
                m = evaluate(table, p_true, extra, args.trials, Path(tmp) / f"m{k}", without)
                row = {"variant": variant + suffix, **m, "build_s": built}
                rows.append(row)
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
                      flush=True)
    print()
    print("| simulator | tree PR-AUC | LR PR-AUC | gap | tree ROC-AUC | LR ROC-AUC | gap "
          "| oracle PR-AUC | tree / oracle | tree ECE | oracle ECE | worst segment ECE: tree "
          "| oracle | test rows |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['tree_pr_auc']:.3f} | {r['lr_pr_auc']:.3f} "
              f"| {r['tree_pr_auc'] - r['lr_pr_auc']:+.3f} | {r['tree_roc_auc']:.3f} "
              f"| {r['lr_roc_auc']:.3f} | {r['tree_roc_auc'] - r['lr_roc_auc']:+.3f} "
              f"| {r['oracle_pr_auc']:.3f} | {r['tree_pr_auc'] / r['oracle_pr_auc']:.3f} "
              f"| {r['tree_ece']:.4f} | {r['oracle_ece']:.4f} "
              f"| {r['tree_worst_segment_ece']:.3f} ({r['tree_worst_segment']}) "
              f"| {r['oracle_worst_segment_ece']:.3f} ({r['oracle_worst_segment']}) "
              f"| {r['test_rows']:,} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
