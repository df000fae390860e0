"""`intent train` and `intent predict`: the modelling chain on any parquet table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from intent_assets.cli import positive_int


def register(subparsers) -> None:
    """Add `intent train ...` and `intent predict ...`."""
    train = subparsers.add_parser(
        "train", help="train a tuned, calibrated LightGBM model on a parquet table",
        description="Train, tune, calibrate and evaluate a binary classifier; write the model "
                    "artifact (directory + model.tar.gz).")
    train.add_argument("--table", required=True, type=Path, help="parquet file or directory")
    train.add_argument("--label", required=True, help="the 0/1 label column")
    train.add_argument("--time-column", default=None,
                       help="split by time on this column (default: stratified split)")
    train.add_argument("--trials", type=positive_int, default=20,
                       help="Optuna trials (default: 20)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--weight-column", default="weight",
                       help="row weights, used when the table has the column (default: weight)")
    train.add_argument("--group-column", default="session_id",
                       help="rows kept in one split together, when the table has the column "
                            "(default: session_id)")
    train.add_argument("--regime", choices=("auto", "holdout", "cross_validated"),
                       default="auto",
                       help="auto (default): cross-validated tuning and calibration, then a "
                            "refit on every non-test row, below 100,000 rows; the fixed "
                            "60/15/10/15 holdout splits above")
    train.add_argument("--feature-service", default="intent_model_v1",
                       help="FeatureService name recorded in the manifest")
    train.add_argument("--families", default="lightgbm",
                       help="model families to compare, comma-separated: lightgbm, xgboost, "
                            "catboost, random_forest, mlp, or all (default: lightgbm). With more "
                            "than one, each is tuned with --trials on the same splits, a weighted "
                            "ensemble of the best is added, every candidate is judged by the "
                            "publication gates and the winner's artifact is written to --out "
                            "(each candidate's to --out/<family>/)")
    train.add_argument("--out", required=True, type=Path, help="artifact directory")
    train.set_defaults(handler=run_train)

    predict = subparsers.add_parser(
        "predict", help="score a parquet table with a trained model",
        description="Add a `probability` column to every row of a table.")
    predict.add_argument("--model", required=True, type=Path,
                         help="artifact directory or model.tar.gz")
    predict.add_argument("--table", required=True, type=Path, help="parquet file or directory")
    predict.add_argument("--out", required=True, type=Path, help="output parquet file")
    predict.set_defaults(handler=run_predict)


def _read_table(path: Path):
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"no table at {path}")
    return pd.read_parquet(path)


def run_train(args: argparse.Namespace) -> int:
    """The `train` command: train, print the test metrics and the artifact path."""
    from intent_assets.training.compare import parse_families
    from intent_assets.training.train import train_model

    try:
        families = parse_families(args.families)
        df = _read_table(args.table)
        if families != ["lightgbm"]:
            return _run_comparison(args, df, families)
        result = train_model(df, args.label, out_dir=args.out, time_column=args.time_column,
                             feature_service=args.feature_service, n_trials=args.trials,
                             seed=args.seed, weight_column=args.weight_column,
                             group_column=args.group_column, regime=args.regime)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"intent train: error: {exc}", file=sys.stderr)
        return 2
    test = result.metrics["test"]
    summary = {
        "artifact": str(result.artifact_dir),
        "tarball": str(result.tar_path),
        "version": result.version,
        "regime": result.manifest["regime"]["name"],
        "rows": result.manifest["regime"]["rows"],
        "split": result.splits.method,
        "features": len(result.features),
        "calibrator": result.calibration.method,
        "test": {k: round(v, 5) if isinstance(v, float) else v for k, v in test.items()},
        "seconds": result.seconds,
    }
    print(json.dumps(summary, indent=2))
    return 0


def _run_comparison(args: argparse.Namespace, df, families: list[str]) -> int:
    """`train --families ...`: every family, the gates, the champion; one JSON summary."""
    from intent_assets.training.compare import compare_families

    summary = compare_families(df, args.label, families, args.out,
                               time_column=args.time_column, weight_column=args.weight_column,
                               group_column=args.group_column, n_trials=args.trials,
                               seed=args.seed, regime=args.regime,
                               feature_service=args.feature_service)
    rounded = [{k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}
               for row in summary["candidates"]]
    print(json.dumps({**summary, "candidates": rounded}, indent=2, default=str))
    return 0 if summary["champion"] else 1


def run_predict(args: argparse.Namespace) -> int:
    """The `predict` command: every input row and column, plus `probability`."""
    from serving.model import ModelArtifact

    try:
        artifact = ModelArtifact.load(args.model)
        df = _read_table(args.table)
        out = df.assign(probability=artifact.predict(df))
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"intent predict: error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(args.out, index=False)
    print(json.dumps({"rows": len(out), "out": str(args.out), "model": artifact.version,
                      "mean_probability": float(out["probability"].mean()) if len(out) else None}))
    return 0
