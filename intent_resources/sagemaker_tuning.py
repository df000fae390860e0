"""SageMaker Automatic Model Tuning: a Bayesian search over the model's hyperparameters.

`CreateHyperParameterTuningJob` runs trials of `intent_assets.training.sagemaker_entry` in
`training_image`; the objective is the metric that program prints (``validation:pr_auc=<value>``),
read from its log by a regex. `wait_tuning_job` returns the best trial (`tuning_result`),
`training_jobs` every trial. `intent_assets.training.sagemaker_tuner` drives it for `tuned_model`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Optional

from intent_resources.sagemaker_common import (
    SageMakerBase,
    SageMakerError,
    error_message,
    sagemaker_name,
    split_s3_uri,
)

OBJECTIVE_METRIC = "validation:pr_auc"
RANGE_KINDS = ("IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges")
TUNING_TERMINAL = ("Completed", "Failed", "Stopped")


def metric_regex(metric_name: str) -> str:
    """The regex that reads ``<metric_name>=<value>`` from a training log (fixed-point values)."""
    return re.escape(metric_name) + r"=([0-9\.]+)"


def normalize_parameter_ranges(ranges: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """boto3's ParameterRanges from a ranges dict, checked; bounds as the strings the API wants."""
    unknown = set(ranges) - set(RANGE_KINDS)
    if unknown:
        raise ValueError(f"unknown parameter range kinds {sorted(unknown)}; expected {RANGE_KINDS}")
    result: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for kind in RANGE_KINDS:
        entries = []
        for entry in ranges.get(kind) or []:
            name = entry.get("Name")
            if not name:
                raise ValueError(f"a {kind} entry has no Name: {entry}")
            if name in seen:
                raise ValueError(f"hyperparameter {name!r} has more than one range")
            seen.add(name)
            entry = dict(entry)
            if kind == "CategoricalParameterRanges":
                if not entry.get("Values"):
                    raise ValueError(f"categorical range {name!r} has no Values")
                entry["Values"] = [str(v) for v in entry["Values"]]
            else:
                if "MinValue" not in entry or "MaxValue" not in entry:
                    raise ValueError(f"range {name!r} needs MinValue and MaxValue")
                if float(entry["MinValue"]) > float(entry["MaxValue"]):
                    raise ValueError(f"range {name!r} has MinValue > MaxValue")
                entry["MinValue"] = str(entry["MinValue"])
                entry["MaxValue"] = str(entry["MaxValue"])
            entries.append(entry)
        if entries:
            result[kind] = entries
    if not result:
        raise ValueError("parameter ranges are empty: nothing to tune")
    return result


def _coerce(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except (TypeError, ValueError):
            pass
    return value


def typed_hyperparameters(values: dict[str, str], ranges: dict[str, Any]) -> dict[str, Any]:
    """SageMaker's string hyperparameters as numbers: int or float as their range says."""
    integer = {r["Name"] for r in ranges.get("IntegerParameterRanges") or []}
    continuous = {r["Name"] for r in ranges.get("ContinuousParameterRanges") or []}
    typed: dict[str, Any] = {}
    for name, value in values.items():
        if name in integer:
            typed[name] = int(float(value))
        elif name in continuous:
            typed[name] = float(value)
        else:
            typed[name] = _coerce(value)
    return typed


def tuning_result(description: dict[str, Any]) -> dict[str, Any]:
    """The best trial of a finished tuning job from its description; an error if it did not succeed.

    The hyperparameters are the static ones merged with the best trial's tuned ones, typed. The
    model artifact is where SageMaker puts a trial's model:
    ``<S3OutputPath>/<job>/output/model.tar.gz``.
    """
    name = description.get("HyperParameterTuningJobName")
    status = description.get("HyperParameterTuningJobStatus")
    if status != "Completed":
        reason = description.get("FailureReason") or "no reason given"
        raise SageMakerError(f"tuning job {name} ended {status}: {reason}")
    best = description.get("BestTrainingJob")
    if not best:
        raise SageMakerError(f"tuning job {name} completed without a successful training job")
    config = description.get("HyperParameterTuningJobConfig") or {}
    ranges = config.get("ParameterRanges") or {}
    definition = description.get("TrainingJobDefinition") or {}
    static = definition.get("StaticHyperParameters") or {}
    tuned = best.get("TunedHyperParameters") or {}
    objective = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    output_path = (definition.get("OutputDataConfig") or {}).get("S3OutputPath")
    job = best.get("TrainingJobName")
    return {
        "tuning_job_name": name,
        "status": status,
        "best_training_job_name": job,
        "tuned_hyperparameters": typed_hyperparameters(tuned, ranges),
        "hyperparameters": typed_hyperparameters({**static, **tuned}, ranges),
        "objective_metric": objective.get("MetricName"),
        "objective_value": (float(objective["Value"]) if objective.get("Value") is not None
                            else None),
        "training_job_status_counters": description.get("TrainingJobStatusCounters") or {},
        "model_data_uri": (f"{output_path.rstrip('/')}/{job}/output/model.tar.gz"
                           if output_path and job else None),
    }


class SageMakerTuningResource(SageMakerBase):
    """SageMaker tuning jobs over the model's hyperparameters, with channels in S3."""

    training_image: str
    # how often a running tuning job is polled, and how long it may run
    poll_s: float = 30.0
    timeout_s: float = 6 * 3600.0
    max_parallel_jobs: int = 2

    def require_settings(self) -> None:
        """An error naming what is missing when the account settings are not configured."""
        missing = [name for name, value in (("role_arn", self.role_arn), ("bucket", self.bucket),
                                            ("training_image", self.training_image)) if not value]
        if missing:
            raise SageMakerError(
                f"SageMaker tuning needs {', '.join(missing)} (prod reads INTENT_SAGEMAKER_ROLE_ARN,"
                " INTENT_MODEL_BUCKET and INTENT_TRAINING_IMAGE from the stack's outputs)")

    def upload_channel(self, local_path: str, run_name: str, channel: str) -> str:
        """Upload a training channel (a file, or a directory's files) and return its S3 prefix."""
        local = Path(local_path)
        if not local.exists():
            raise FileNotFoundError(f"channel data {local} does not exist")
        prefix_uri = self.s3_uri("tuning", run_name, "input", channel)
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        if not files:
            raise FileNotFoundError(f"channel directory {local} is empty")
        for path in files:
            relative = path.name if local.is_file() else path.relative_to(local).as_posix()
            self._upload(path, f"{prefix_uri}/{relative}")
        return prefix_uri + "/"

    def tuning_job_request(self, name: str, train_s3_uri: str, validation_s3_uri: str,
                           parameter_ranges: dict[str, Any], max_jobs: int, max_parallel: int,
                           objective_metric: str = OBJECTIVE_METRIC,
                           static_hyperparameters: Optional[dict[str, Any]] = None,
                           seed: int = 42, max_runtime_s: int = 3600) -> dict[str, Any]:
        """The CreateHyperParameterTuningJob request: Bayesian, maximizing the objective metric."""
        job_name = sagemaker_name(name, max_length=32)
        if job_name != name:
            raise ValueError(f"tuning job name {name!r} is not valid for SageMaker; "
                             f"try {job_name!r}")
        if not 1 <= max_parallel <= max_jobs:
            raise ValueError(f"need 1 <= max_parallel ({max_parallel}) <= max_jobs ({max_jobs})")
        ranges = normalize_parameter_ranges(parameter_ranges)
        static = {k: str(v) for k, v in (static_hyperparameters or {}).items()}
        tuned = {r["Name"] for entries in ranges.values() for r in entries}
        clash = sorted(tuned & set(static))
        if clash:
            raise ValueError(f"hyperparameters {clash} are both tuned and static")
        channels = [
            {"ChannelName": channel,
             "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                             "S3DataDistributionType": "FullyReplicated"}}}
            for channel, uri in (("train", train_s3_uri), ("validation", validation_s3_uri))
        ]
        for uri in (train_s3_uri, validation_s3_uri):
            split_s3_uri(uri)
        return {
            "HyperParameterTuningJobName": job_name,
            "HyperParameterTuningJobConfig": {
                "Strategy": "Bayesian",
                "HyperParameterTuningJobObjective": {"Type": "Maximize",
                                                     "MetricName": objective_metric},
                "ResourceLimits": {"MaxNumberOfTrainingJobs": int(max_jobs),
                                   "MaxParallelTrainingJobs": int(max_parallel)},
                "ParameterRanges": ranges,
                # The entry point stops early itself; SageMaker's early stopping needs per-epoch
                # metrics it would not get.
                "TrainingJobEarlyStoppingType": "Off",
                "RandomSeed": int(seed),
            },
            "TrainingJobDefinition": {
                "StaticHyperParameters": static,
                "AlgorithmSpecification": {
                    "TrainingImage": self.training_image,
                    "TrainingInputMode": "File",
                    "MetricDefinitions": [{"Name": objective_metric,
                                           "Regex": metric_regex(objective_metric)}],
                },
                "RoleArn": self.role_arn,
                "InputDataConfig": channels,
                "OutputDataConfig": {"S3OutputPath": self.s3_uri("tuning", job_name, "output")},
                "ResourceConfig": {"InstanceType": self.instance_type, "InstanceCount": 1,
                                   "VolumeSizeInGB": 30},
                "StoppingCondition": {"MaxRuntimeInSeconds": int(max_runtime_s)},
            },
        }

    def start_tuning_job(self, name: str, train_s3_uri: str, validation_s3_uri: str,
                         parameter_ranges: dict[str, Any], max_jobs: int, max_parallel: int,
                         objective_metric: str = OBJECTIVE_METRIC,
                         static_hyperparameters: Optional[dict[str, Any]] = None,
                         seed: int = 42, max_runtime_s: int = 3600) -> str:
        """Start a Bayesian tuning job over the ranges; its ARN."""
        request = self.tuning_job_request(name, train_s3_uri, validation_s3_uri, parameter_ranges,
                                          max_jobs, max_parallel, objective_metric,
                                          static_hyperparameters, seed, max_runtime_s)
        from botocore.exceptions import ClientError

        try:
            return self.sagemaker.create_hyper_parameter_tuning_job(
                **request)["HyperParameterTuningJobArn"]
        except ClientError as error:
            raise SageMakerError(f"could not start tuning job {name}: "
                                 f"{error_message(error)}") from error

    def describe_tuning_job(self, name: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return self.sagemaker.describe_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=name)
        except ClientError as error:
            raise SageMakerError(f"tuning job {name}: {error_message(error)}") from error

    def wait_tuning_job(self, name: str, poll_s: float = 30.0,
                        timeout_s: float = 6 * 3600) -> dict[str, Any]:
        """Wait for a tuning job to end; its best trial (see `tuning_result`), or why it failed."""
        deadline = time.monotonic() + timeout_s
        while True:
            description = self.describe_tuning_job(name)
            status = description.get("HyperParameterTuningJobStatus")
            if status in TUNING_TERMINAL:
                return tuning_result(description)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"tuning job {name} still {status} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def training_jobs(self, name: str) -> list[dict[str, Any]]:
        """Every trial of a tuning job (ListTrainingJobsForHyperParameterTuningJob, all pages)."""
        from botocore.exceptions import ClientError

        trials: list[dict[str, Any]] = []
        request: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}
        while True:
            try:
                page = self.sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(**request)
            except ClientError as error:
                raise SageMakerError(f"trials of tuning job {name}: "
                                     f"{error_message(error)}") from error
            trials.extend(page.get("TrainingJobSummaries") or [])
            if not page.get("NextToken"):
                return trials
            request["NextToken"] = page["NextToken"]
