"""SageMaker AMT as the model's search: the same space, trials of `sagemaker_entry` in the image.

`sagemaker_tuner(resource)` has the signature of `tuning.tune_optuna`, so `fit_tuned` runs either.
The train and validation splits go to S3 as parquet channels, one Bayesian tuning job searches
`to_sagemaker_parameter_ranges` of the space on validation PR-AUC (the metric line the entry point
prints), and the best trial's model.tar.gz gives the early-stopped tree count and the validation
margins calibration needs. Trials read the features as numbers (a categorical as its code), as the
entry point reads any numeric column.
"""

from __future__ import annotations

import functools
import json
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from intent_assets.training.tuning import (
    EARLY_STOPPING_ROUNDS,
    SEARCH_SPACE,
    DesignMatrix,
    Param,
    TuningResult,
    neg_pos_ratio,
    resolve,
    to_sagemaker_parameter_ranges,
)
from intent_resources.sagemaker_common import SageMakerError, sagemaker_name
from intent_resources.sagemaker_tuning import SageMakerTuningResource, typed_hyperparameters

LABEL = "label"
WEIGHT = "weight"


def channel_frame(matrix: DesignMatrix) -> pd.DataFrame:
    """A split as the entry point reads a channel: one column per feature, the label, the weight."""
    clash = {LABEL, WEIGHT} & set(matrix.feature_names)
    if clash:
        raise ValueError(f"features {sorted(clash)} clash with the channel's label/weight columns")
    frame = pd.DataFrame(np.asarray(matrix.X, dtype=np.float64),
                         columns=list(matrix.feature_names))
    frame[LABEL] = np.asarray(matrix.y).astype(int)
    frame[WEIGHT] = np.asarray(matrix.w, dtype=np.float64)
    return frame


def tuning_job_name() -> str:
    """A new tuning job's name: unique, and within SageMaker's 32 characters."""
    stamp = time.strftime("%y%m%d%H%M%S", time.gmtime())
    return sagemaker_name("intent", stamp, uuid.uuid4().hex[:6], max_length=32)


def read_trial_model(tar_path: Path) -> tuple[lgb.Booster, dict[str, Any]]:
    """The booster and metrics.json a trial wrote to /opt/ml/model, from its model.tar.gz."""
    with tarfile.open(tar_path, "r:gz") as tar:
        members = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
        missing = {"booster.txt", "metrics.json"} - set(members)
        if missing:
            raise SageMakerError(f"{tar_path} lacks {sorted(missing)}: not a trial's model")
        booster_text = tar.extractfile(members["booster.txt"]).read().decode()
        metrics = json.loads(tar.extractfile(members["metrics.json"]).read())
    return lgb.Booster(model_str=booster_text), metrics


def trial_rows(trials: list[dict[str, Any]], ranges: dict[str, Any]) -> list[dict[str, Any]]:
    """The tuning job's trials as the search history (the same columns as Optuna's)."""
    rows = []
    for i, trial in enumerate(sorted(trials, key=lambda t: t.get("CreationTime") or 0)):
        metric = trial.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        started, ended = trial.get("TrainingStartTime"), trial.get("TrainingEndTime")
        rows.append({
            "trial": i, "training_job": trial.get("TrainingJobName"),
            "status": trial.get("TrainingJobStatus"),
            "pr_auc": float(metric["Value"]) if metric.get("Value") is not None else None,
            "seconds": (round((ended - started).total_seconds(), 3)
                        if started is not None and ended is not None else None),
            "params": typed_hyperparameters(trial.get("TunedHyperParameters") or {}, ranges),
        })
    return rows


def tune_sagemaker(resource: SageMakerTuningResource, train: DesignMatrix, valid: DesignMatrix,
                   space: tuple[Param, ...] = SEARCH_SPACE, n_trials: int = 20,
                   seed: int = 0) -> TuningResult:
    """Search the space with a SageMaker tuning job; the best trial as a TuningResult."""
    resource.require_settings()
    if n_trials < 1:
        raise ValueError("n_trials must be at least 1")
    resolved = resolve(space, neg_pos_ratio(train.y, train.w))
    ranges = to_sagemaker_parameter_ranges(resolved)
    name = tuning_job_name()
    with tempfile.TemporaryDirectory(prefix="intent-tuning-") as tmp:
        channels = {}
        for channel, matrix in (("train", train), ("validation", valid)):
            directory = Path(tmp) / channel
            directory.mkdir()
            channel_frame(matrix).to_parquet(directory / f"{channel}.parquet", index=False)
            channels[channel] = resource.upload_channel(str(directory), name, channel)
        resource.start_tuning_job(
            name, channels["train"], channels["validation"], ranges, max_jobs=n_trials,
            max_parallel=min(n_trials, resource.max_parallel_jobs), seed=seed,
            static_hyperparameters={"label": LABEL, "weight": WEIGHT, "seed": seed,
                                    "early_stopping_rounds": EARLY_STOPPING_ROUNDS})
        best = resource.wait_tuning_job(name, poll_s=resource.poll_s,
                                        timeout_s=resource.timeout_s)
        trials = resource.training_jobs(name)
        booster, metrics = read_trial_model(
            resource.download(best["model_data_uri"], Path(tmp) / "best" / "model.tar.gz"))
    if list(metrics.get("features") or []) != list(train.feature_names):
        raise SageMakerError(f"the best trial {best['best_training_job_name']} learned other "
                             "features than the ones sent")
    tuned = best["tuned_hyperparameters"]
    lacking = [p.name for p in resolved if p.name not in tuned]
    if lacking:
        raise SageMakerError(f"the best trial {best['best_training_job_name']} has no value for "
                             f"{lacking}")
    best_iteration = int(metrics["best_iteration"])
    margin = booster.predict(np.asarray(valid.X, dtype=np.float64), raw_score=True)
    return TuningResult(
        best_params={**{p.name: tuned[p.name] for p in resolved},
                     "num_iterations": best_iteration},
        best_pr_auc=float(best["objective_value"]), best_iteration=best_iteration,
        history=trial_rows(trials, ranges), space=resolved,
        validation_margin=np.asarray(margin, dtype=np.float64),
        source={"backend": "sagemaker", "tuning_job": name,
                "best_training_job": best["best_training_job_name"],
                "model_data_uri": best["model_data_uri"],
                "training_image": resource.training_image,
                "status_counters": best["training_job_status_counters"]})


def sagemaker_tuner(resource: SageMakerTuningResource):
    """`tune_sagemaker` bound to a resource: the `tuner` `fit_tuned` takes."""
    return functools.partial(tune_sagemaker, resource)
