"""The training program of a SageMaker tuning trial: one LightGBM fit, scored by validation PR-AUC.

SageMaker runs it inside the training image; it runs the same way on a laptop:

    python -m intent_assets.training.sagemaker_entry --train DIR --validation DIR --model-dir DIR \
        --num_leaves 31 --learning_rate 0.05 ...

It follows SageMaker's conventions so the image needs no wrapper:
- channels: ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION`` (script mode), else
  ``/opt/ml/input/data/<channel>``; each a directory of parquet and/or CSV files, or one file;
- model directory: ``SM_MODEL_DIR``, else ``/opt/ml/model`` (SageMaker tars it into model.tar.gz);
- hyperparameters: ``hyperparameters.json`` in ``SM_INPUT_CONFIG_DIR``, else
  ``/opt/ml/input/config/`` (what a bring-your-own image gets, every value a string), overridden
  by ``--name value`` arguments (what script mode passes);
- failure: the reason goes to ``failure`` in ``SM_OUTPUT_DIR``, else ``/opt/ml/output/``, which
  SageMaker reports as FailureReason.

It prints ``validation:pr_auc=<value>``, the line the tuning job's metric regex reads, and writes
``booster.txt`` (the best iteration only) and ``metrics.json`` to the model directory.

Self-contained on purpose (lightgbm, pandas, numpy, scikit-learn): the training image installs
only those, not the project.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

METRIC_NAME = "validation:pr_auc"

INT_HYPERPARAMETERS = ("num_leaves", "max_depth", "min_data_in_leaf", "num_iterations",
                       "early_stopping_rounds", "seed", "num_threads")
FLOAT_HYPERPARAMETERS = ("learning_rate", "feature_fraction", "bagging_fraction", "lambda_l1",
                         "lambda_l2", "scale_pos_weight")
STR_HYPERPARAMETERS = ("label", "weight")

DEFAULT_HYPERPARAMETERS: dict[str, Any] = {
    "num_leaves": 31, "max_depth": -1, "min_data_in_leaf": 20, "learning_rate": 0.05,
    "num_iterations": 500, "feature_fraction": 1.0, "bagging_fraction": 1.0, "lambda_l1": 0.0,
    "lambda_l2": 0.0, "scale_pos_weight": 1.0, "early_stopping_rounds": 50, "seed": 42,
    "num_threads": 0, "label": "label", "weight": "weight",
}

SAGEMAKER_HYPERPARAMETERS_FILE = "/opt/ml/input/config/hyperparameters.json"
SAGEMAKER_FAILURE_FILE = "/opt/ml/output/failure"


def _unquote(value: Any) -> Any:
    # The SageMaker Python SDK JSON-encodes script-mode values, so a string may arrive as '"label"'.
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    return value


def _as_int(name: str, value: Any) -> int:
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"hyperparameter {name} must be an integer, got {value!r}")
    return int(number)


def parse_hyperparameters(raw: dict[str, Any]) -> dict[str, Any]:
    """Typed hyperparameters from SageMaker's string values, with defaults for the rest.

    Keys SageMaker adds for itself (``_tuning_objective_metric``, ``sagemaker_*``) are ignored; any
    other unknown name is an error, so a misspelt hyperparameter never silently does nothing.
    """
    params = dict(DEFAULT_HYPERPARAMETERS)
    for name, value in raw.items():
        if name.startswith("_") or name.startswith("sagemaker_"):
            continue
        value = _unquote(value)
        try:
            if name in INT_HYPERPARAMETERS:
                params[name] = _as_int(name, value)
            elif name in FLOAT_HYPERPARAMETERS:
                params[name] = float(value)
            elif name in STR_HYPERPARAMETERS:
                params[name] = str(value)
            else:
                known = ", ".join(sorted(DEFAULT_HYPERPARAMETERS))
                raise ValueError(f"unknown hyperparameter {name!r} (known: {known})")
        except (TypeError, ValueError) as error:
            if "hyperparameter" in str(error):
                raise
            raise ValueError(f"hyperparameter {name} has a bad value {value!r}: {error}") from error
    for name in ("feature_fraction", "bagging_fraction"):
        if not 0.0 < params[name] <= 1.0:
            raise ValueError(f"hyperparameter {name} must be in (0, 1], got {params[name]}")
    return params


def pairs_to_dict(args: Sequence[str]) -> dict[str, str]:
    """``--name value`` pairs (script mode's way of passing hyperparameters) as a dict."""
    result: dict[str, str] = {}
    items = list(args)
    i = 0
    while i < len(items):
        token = items[i]
        if not token.startswith("--"):
            raise ValueError(f"expected --name value pairs, got {token!r}")
        if "=" in token:
            name, value = token[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ValueError(f"hyperparameter {token} has no value")
            name, value = token[2:], items[i + 1]
            i += 2
        result[name.replace("-", "_")] = value
    return result


def read_channel(path: str | Path) -> pd.DataFrame:
    """Every parquet and CSV file of a channel (a directory, searched recursively, or one file)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"channel path {root} does not exist")
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".parquet", ".csv"))
    if not files:
        raise FileNotFoundError(f"no parquet or CSV files in channel {root}")
    frames = [pd.read_parquet(f) if f.suffix.lower() == ".parquet" else pd.read_csv(f)
              for f in files]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def feature_columns(frame: pd.DataFrame, label: str, weight: Optional[str]) -> list[str]:
    """The numeric (and boolean) columns other than the label and the weight, in frame order."""
    excluded = {label, weight}
    return [c for c in frame.columns
            if c not in excluded and pd.api.types.is_numeric_dtype(frame[c])]


def _labels(frame: pd.DataFrame, label: str, channel: str) -> np.ndarray:
    if label not in frame.columns:
        raise ValueError(f"{channel} channel has no label column {label!r} "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    y = frame[label]
    if y.isna().any():
        raise ValueError(f"{channel} channel has {int(y.isna().sum())} null labels")
    values = set(pd.unique(y.astype(float)))
    if not values <= {0.0, 1.0}:
        raise ValueError(f"{channel} label {label!r} must be 0/1, got values {sorted(values)[:5]}")
    return y.astype(int).to_numpy()


def _weights(frame: pd.DataFrame, weight: Optional[str]) -> Optional[np.ndarray]:
    if weight is None or weight not in frame.columns:
        return None
    w = frame[weight].astype(float).to_numpy()
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weight column {weight!r} must be finite and non-negative")
    return w


def lightgbm_params(hp: dict[str, Any]) -> dict[str, Any]:
    """LightGBM's parameters for a binary model from the typed hyperparameters."""
    return {
        "objective": "binary",
        "metric": "average_precision",
        "num_leaves": hp["num_leaves"],
        "max_depth": hp["max_depth"],
        "min_data_in_leaf": hp["min_data_in_leaf"],
        "learning_rate": hp["learning_rate"],
        "feature_fraction": hp["feature_fraction"],
        "bagging_fraction": hp["bagging_fraction"],
        # Bagging only happens with a frequency; without one bagging_fraction would be ignored.
        "bagging_freq": 1 if hp["bagging_fraction"] < 1.0 else 0,
        "lambda_l1": hp["lambda_l1"],
        "lambda_l2": hp["lambda_l2"],
        "scale_pos_weight": hp["scale_pos_weight"],
        "seed": hp["seed"],
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": hp["num_threads"],
        "verbosity": -1,
    }


def train(train_frame: pd.DataFrame, validation_frame: pd.DataFrame,
          hp: dict[str, Any]) -> tuple[lgb.Booster, dict[str, Any]]:
    """Fit with early stopping on validation; return the booster and its validation metrics."""
    label, weight = hp["label"], hp["weight"]
    if weight != DEFAULT_HYPERPARAMETERS["weight"] and weight not in train_frame.columns:
        raise ValueError(f"weight column {weight!r} named by the hyperparameters is not in train")
    features = feature_columns(train_frame, label, weight)
    if not features:
        raise ValueError("train channel has no numeric feature columns")
    missing = [c for c in features if c not in validation_frame.columns]
    if missing:
        raise ValueError(f"validation channel lacks feature columns {missing}")
    y_train, y_valid = _labels(train_frame, label, "train"), _labels(validation_frame, label,
                                                                      "validation")
    if y_train.min() == y_train.max():
        raise ValueError("train channel has a single class; PR-AUC needs both")
    if y_valid.min() == y_valid.max():
        raise ValueError("validation channel has a single class; PR-AUC needs both")
    w_train, w_valid = _weights(train_frame, weight), _weights(validation_frame, weight)

    x_train = train_frame[features].astype(float)
    x_valid = validation_frame[features].astype(float)
    dtrain = lgb.Dataset(x_train, label=y_train, weight=w_train, free_raw_data=False)
    dvalid = lgb.Dataset(x_valid, label=y_valid, weight=w_valid, reference=dtrain)
    booster = lgb.train(lightgbm_params(hp), dtrain, num_boost_round=hp["num_iterations"],
                        valid_sets=[dvalid], valid_names=["validation"],
                        callbacks=[lgb.early_stopping(hp["early_stopping_rounds"], verbose=False)])
    best_iteration = booster.best_iteration or booster.current_iteration()
    scores = booster.predict(x_valid, num_iteration=best_iteration)
    pr_auc = float(average_precision_score(y_valid, scores, sample_weight=w_valid))
    metrics = {
        "pr_auc": pr_auc,
        "best_iteration": int(best_iteration),
        "n_train": int(len(train_frame)),
        "n_validation": int(len(validation_frame)),
        "features": features,
        "weighted": w_train is not None,
        "hyperparameters": hp,
    }
    return booster, metrics


def metric_line(pr_auc: float) -> str:
    """The log line the tuning job's metric regex ``validation:pr_auc=([0-9\\.]+)`` reads."""
    # Fixed-point: the regex has no room for an exponent.
    return f"{METRIC_NAME}={pr_auc:.6f}"


def _arguments(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default=None, help="train channel (dir or file)")
    parser.add_argument("--validation", default=None, help="validation channel (dir or file)")
    parser.add_argument("--model-dir", default=None, help="where booster.txt is written")
    parser.add_argument("--hyperparameters-file", default=None,
                        help="SageMaker's hyperparameters.json")
    parser.add_argument("--failure-file", default=None,
                        help="where the failure reason is written")
    args = list(argv)
    # A bring-your-own image is started as `<entrypoint> train`.
    if args[:1] == ["train"]:
        args = args[1:]
    known, rest = parser.parse_known_args(args)
    return known, pairs_to_dict(rest)


def _failure_file(option: Optional[str]) -> Optional[Path]:
    if option:
        return Path(option)
    if os.environ.get("SM_OUTPUT_DIR"):
        return Path(os.environ["SM_OUTPUT_DIR"]) / "failure"
    default = Path(SAGEMAKER_FAILURE_FILE)
    return default if default.parent.is_dir() else None


def _hyperparameters_file(option: Optional[str]) -> Path:
    if option:
        return Path(option)
    if os.environ.get("SM_INPUT_CONFIG_DIR"):
        return Path(os.environ["SM_INPUT_CONFIG_DIR"]) / "hyperparameters.json"
    return Path(SAGEMAKER_HYPERPARAMETERS_FILE)


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Resolve SageMaker's paths and hyperparameters, train, write the model; the metrics."""
    known, overrides = _arguments(argv)
    hp_file = _hyperparameters_file(known.hyperparameters_file)
    raw = json.loads(hp_file.read_text()) if hp_file.exists() else {}
    raw.update(overrides)
    hp = parse_hyperparameters(raw)

    train_dir = known.train or os.environ.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train")
    valid_dir = known.validation or os.environ.get("SM_CHANNEL_VALIDATION",
                                                   "/opt/ml/input/data/validation")
    model_dir = Path(known.model_dir or os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))

    booster, metrics = train(read_channel(train_dir), read_channel(valid_dir), hp)
    model_dir.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_dir / "booster.txt"), num_iteration=metrics["best_iteration"])
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"best_iteration={metrics['best_iteration']} n_train={metrics['n_train']} "
          f"n_validation={metrics['n_validation']}")
    print(metric_line(metrics["pr_auc"]), flush=True)
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(argv)
    except Exception as error:  # noqa: BLE001 - every failure must reach SageMaker's FailureReason
        reason = f"{type(error).__name__}: {error}"
        traceback.print_exc()
        print(f"training failed: {reason}", file=sys.stderr)
        try:
            failure = _failure_file(_arguments(argv)[0].failure_file)
        except Exception:  # noqa: BLE001 - the arguments themselves may be what failed
            failure = _failure_file(None)
        if failure is not None:
            failure.parent.mkdir(parents=True, exist_ok=True)
            # SageMaker truncates FailureReason to 1 KiB; keep the start, which names the cause.
            failure.write_text(reason[:1024])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
