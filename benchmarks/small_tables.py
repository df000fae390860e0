"""Small tables: `intent train` against an untuned LightGBM with isotonic calibration.

    flock -x /tmp/intent-cpu.lock .venv/bin/python benchmarks/small_tables.py --trials 10

Tables:
- simulator session tables of about 2k, 10k and 50k rows: simulated days
  (`intent_assets.ingest.simulator`), contract-validated and deduplicated, sessions labelled by
  the project's rule (a purchase in the session, or by the same user within the grace window
  after it; bots and single-event sessions left out, as `ingest.sessionize` does on Spark), cut
  into training snapshots by `features.snapshots.build_snapshots`. Session features only: the
  user and product features need the Spark graph. Split by time on `event_timestamp`.
- imbalanced tables from `sklearn.datasets.make_classification` (5k rows at 5 % positives, 20k
  at 2 %): no time column, no groups, so stratified.

Per table, on one test split (`train.training_splits`, the one `intent train` reports on), and
with the same feature matrix (the `Vectorizer` of `intent train`'s features):
- `intent train`: the command, in process (`--regime auto`: cross-validated below 100k rows);
- `intent train --regime holdout`: what the command did before the small-table regime;
- baseline: `LGBMClassifier()` with its defaults inside sklearn's
  `CalibratedClassifierCV(method="isotonic", cv=5 stratified group folds)`, fitted on every
  non-test row (the rows `intent train` learns from).
Printed: PR-AUC, ROC-AUC, log loss, ECE (weighted, `reports.metrics`) and seconds, then how
sure the PR-AUC and log-loss differences to the baseline are: their spread over a paired
bootstrap of the test split (sessions resampled whole), and how often `intent train` is ahead.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
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

METRICS = ("pr_auc", "roc_auc", "log_loss", "ece")
# Grace window and bot rule of intent_assets.ingest.sessionize (kept in step by hand: that
# module runs on Spark).
GRACE = pd.Timedelta(minutes=30)
BOT_MIN_EVENTS, BOT_EVENTS_PER_MINUTE, BOT_MAX_EVENTS = 20, 20.0, 500


def sessions_of(events: pd.DataFrame) -> pd.DataFrame:
    """Label, bot and single-heartbeat flags per session, by the sessionize rules, in pandas."""
    g = events.groupby("session_id")
    s = pd.DataFrame({"user_id": g["user_id"].first(), "start": g["event_time"].min(),
                      "end": g["event_time"].max(), "n_events": g.size(),
                      "bought": g["event_type"].agg(lambda t: bool((t == "purchase").any()))})
    buys = events.loc[events["event_type"] == "purchase", ["user_id", "session_id", "event_time"]]
    later = s.reset_index()[["session_id", "user_id", "end"]].merge(
        buys.rename(columns={"session_id": "p_session", "event_time": "p_time"}), on="user_id")
    later = later[(later["p_session"] != later["session_id"]) & (later["p_time"] > later["end"])
                  & (later["p_time"] <= later["end"] + GRACE)]
    s["label"] = (s["bought"] | s.index.isin(later["session_id"])).astype(int)
    minutes = np.maximum((s["end"] - s["start"]).dt.total_seconds() / 60.0, 1.0)
    fast = (s["n_events"] >= BOT_MIN_EVENTS) & (s["n_events"] / minutes > BOT_EVENTS_PER_MINUTE)
    s["is_bot"] = fast | (s["n_events"] > BOT_MAX_EVENTS)
    s["is_trainable"] = ~s["is_bot"] & (s["n_events"] > 1)
    return s.reset_index()


def simulator_table(rows: int, seed: int = 11) -> pd.DataFrame:
    """About `rows` training snapshots from simulated days (whole days, then whole sessions)."""
    from intent_assets.features.snapshots import build_snapshots
    from intent_assets.ingest.simulator import SimulatorConfig, simulate_day
    from streaming_jobs.contract import split_duplicates, validate_events

    days = 4 if rows <= 20_000 else 7
    # 1.2 simulated sessions per snapshot kept is more than enough: about 2.4 snapshots come
    # from each trainable session, and bots and single-event sessions give none
    config = SimulatorConfig(seed=seed, sessions_per_day=int(rows / 1.2 / days) + 50,
                             n_products=1_000)
    parts = []
    for i in range(days):
        events = simulate_day(config, dt.date(2026, 10, 1) + dt.timedelta(days=i)).events
        parts.append(split_duplicates(validate_events(events).events).events)
    events = pd.concat(parts, ignore_index=True)
    events = events.sort_values(["session_id", "event_time", "event_id"], ignore_index=True)
    snaps = build_snapshots(events, sessions_of(events))
    starts = snaps.groupby("session_id")["event_timestamp"].transform("min")
    snaps = snaps.assign(_start=starts).sort_values(["_start", "session_id"], kind="stable")
    first = snaps.groupby("session_id", sort=False).ngroup()
    per_session = snaps.groupby(first).size().cumsum()
    keep = per_session.index[per_session <= rows]
    return snaps[first.isin(keep)].drop(columns="_start").reset_index(drop=True)


def classification_table(rows: int, positives: float, seed: int) -> pd.DataFrame:
    """An imbalanced table: 20 features (6 informative, 4 redundant), 1 % of labels flipped."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=20, n_informative=6, n_redundant=4,
                               weights=[1 - positives], flip_y=0.01, class_sep=1.0,
                               random_state=seed)
    frame = pd.DataFrame(X, columns=[f"x{i:02d}" for i in range(X.shape[1])])
    return frame.assign(row_id=np.arange(rows), label=y)


def run_intent(table: pd.DataFrame, time_column: str | None, trials: int, seed: int,
               regime: str, work: Path):
    """`intent train` in process; the artifact scored on its own test split."""
    from intent_assets.cli import main as intent_main
    from serving.model import ModelArtifact

    path, out = work / "table.parquet", work / f"model-{regime}"
    table.to_parquet(path)
    argv = ["train", "--table", str(path), "--label", "label", "--trials", str(trials),
            "--seed", str(seed), "--regime", regime, "--out", str(out)]
    if time_column:
        argv += ["--time-column", time_column]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = intent_main(argv)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"intent train exited with {code}")
    summary = json.loads(printed.getvalue())
    return ModelArtifact.load(out), summary, seconds


def run_baseline(table: pd.DataFrame, test: pd.DataFrame, artifact, seed: int):
    """Default LGBMClassifier, isotonic by CalibratedClassifierCV on 5 group folds; the
    features are read by `artifact`'s vectorizer (those of `intent train`)."""
    from lightgbm import LGBMClassifier
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedGroupKFold

    development = table.drop(index=test.index)
    X = artifact.vectorize(development)
    y = development["label"].to_numpy()
    groups = (development["session_id"].to_numpy() if "session_id" in development
              else np.arange(len(development)))
    folds = list(StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(X, y, groups))
    model = CalibratedClassifierCV(LGBMClassifier(random_state=seed, verbosity=-1),
                                   method="isotonic", cv=folds)
    categorical = [i for i, f in enumerate(artifact.features) if f.kind == "categorical"]
    started = time.perf_counter()
    model.fit(X, y, categorical_feature=categorical or "auto")
    seconds = time.perf_counter() - started
    return model.predict_proba(artifact.vectorize(test))[:, 1], seconds


def paired_bootstrap(test: pd.DataFrame, y, w, p_ours, p_base, n: int = 300, seed: int = 0):
    """PR-AUC and log-loss differences (ours - baseline) over bootstrap resamples of the test
    split, sessions drawn whole: mean, sd and the share of resamples where ours is ahead."""
    from intent_assets.reports.metrics import pr_auc, weighted_log_loss

    groups = (pd.factorize(test["session_id"])[0] if "session_id" in test
              else np.arange(len(test)))
    w = np.ones(len(test)) if w is None else np.asarray(w, dtype=float)
    rng = np.random.default_rng(seed)
    n_groups = groups.max() + 1
    d_pr, d_ll = [], []
    for _ in range(n):
        counts = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups))
        wb = w * counts[groups]
        if not (wb[y == 1].sum() > 0):
            continue
        d_pr.append(pr_auc(y, p_ours, wb) - pr_auc(y, p_base, wb))
        d_ll.append(weighted_log_loss(y, p_ours, wb) - weighted_log_loss(y, p_base, wb))
    d_pr, d_ll = np.array(d_pr), np.array(d_ll)
    return (f"vs baseline, paired bootstrap of the test split ({len(d_pr)} resamples): "
            f"PR-AUC {d_pr.mean():+.4f} (sd {d_pr.std():.4f}, ahead in {(d_pr > 0).mean():.0%}), "
            f"log loss {d_ll.mean():+.4f} (sd {d_ll.std():.4f}, ahead in {(d_ll < 0).mean():.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="Optuna trials per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="run the tables whose name has this")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from intent_assets.reports.metrics import classification_metrics
    from intent_assets.training.train import training_splits

    tables = [
        ("simulator ~2k", lambda: simulator_table(2_000), "event_timestamp"),
        ("simulator ~10k", lambda: simulator_table(10_000), "event_timestamp"),
        ("simulator ~50k", lambda: simulator_table(50_000), "event_timestamp"),
        ("make_classification 5k, 5 %", lambda: classification_table(5_000, 0.05, 1), None),
        ("make_classification 20k, 2 %", lambda: classification_table(20_000, 0.02, 2), None),
    ]
    print(f"trials per model: {args.trials}, seed {args.seed}")
    misses = []
    for name, build, time_column in tables:
        if args.only and args.only not in name:
            continue
        started = time.perf_counter()
        table = build()
        built = time.perf_counter() - started
        test = training_splits(table, "label", time_column, seed=args.seed).test
        y = test["label"].to_numpy(dtype=float)
        w = test["weight"].to_numpy() if "weight" in test else None
        results = {}
        with tempfile.TemporaryDirectory(prefix="intent-small-") as tmp:
            for regime, label in (("auto", "intent train"), ("holdout", "intent train, holdout")):
                artifact, summary, seconds = run_intent(table, time_column, args.trials,
                                                        args.seed, regime, Path(tmp))
                p = artifact.predict(test)
                results[label] = (classification_metrics(y, p, w), seconds, summary, p)
                if regime == "auto":
                    ours = artifact
            p, seconds = run_baseline(table, test, ours, args.seed)
            results["LightGBM defaults + isotonic"] = (classification_metrics(y, p, w), seconds,
                                                       None, p)
        auto = results["intent train"][2]
        print(f"\n## {name}: {len(table):,} rows, {int(table['label'].sum()):,} positive rows, "
              f"test {len(test):,} rows ({int(y.sum())} positive); table built in {built:.0f} s")
        print(f"intent train regime: {auto['regime']}, rows {auto['rows']}, "
              f"calibrator {auto['calibrator']}")
        print(f"{'model':<32}{'PR-AUC':>9}{'ROC-AUC':>9}{'log loss':>10}{'ECE':>8}{'seconds':>9}")
        for label, (m, seconds, _, _) in results.items():
            print(f"{label:<32}{m['pr_auc']:>9.4f}{m['roc_auc']:>9.4f}{m['log_loss']:>10.4f}"
                  f"{m['ece']:>8.4f}{seconds:>9.1f}")
        print(paired_bootstrap(test, y, w, results["intent train"][3],
                               results["LightGBM defaults + isotonic"][3]))
        ours, base = results["intent train"][0], results["LightGBM defaults + isotonic"][0]
        if not (ours["pr_auc"] > base["pr_auc"] and ours["log_loss"] < base["log_loss"]):
            misses.append(name)
    print("\ntarget (intent train better on PR-AUC and log loss on every table): "
          + ("met" if not misses else "missed on " + ", ".join(misses)))


if __name__ == "__main__":
    main()
