"""What SageMaker's training fleet does for the stack's tuning jobs: run the trials.

moto (5.2) records `CreateHyperParameterTuningJob` as sent and reports the job Completed at once
with a canned best trial (``FakeTrainingJobName``); it runs no training and has no
`ListTrainingJobsForHyperParameterTuningJob`. The stack's moto server gets both here. A created
job is InProgress while its trials run, one after another, each as the training container runs:
in a temporary directory laid out like ``/opt/ml`` (channels downloaded from S3 into
``input/data/<channel>``, ``input/config/hyperparameters.json`` with the static and the sampled
values, ``model/``, ``output/``), the `SM_*` variables SageMaker's toolkit sets, the training
program started as ``<program> train``; the objective is read from its log with the job's metric
regex, and ``model/`` goes to ``<S3OutputPath>/<trial>/output/model.tar.gz``. The job then
reports the best trial by that metric, or Failed with the first trial's reason.

What AWS does and this does not: the Bayesian strategy (values here are sampled at random from
the ranges with the job's RandomSeed, honouring Linear/Logarithmic scaling), parallel trials on
separate instances, early stopping, and pulling `TrainingImage` from ECR (the image's program,
`intent_assets.training.sagemaker_entry`, runs with this interpreter instead).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

# The program the training image runs (intent_resources/cloudformation/intent.yaml, TrainingImage).
TRAINING_PROGRAM = (sys.executable, "-m", "intent_assets.training.sagemaker_entry", "train")
LOG_TAIL = 4_000


def sample_hyperparameters(ranges: dict[str, Any], rng: random.Random) -> dict[str, str]:
    """One trial's values from a job's ParameterRanges, as the strings SageMaker passes."""
    values: dict[str, str] = {}
    for kind in ("IntegerParameterRanges", "ContinuousParameterRanges"):
        for entry in ranges.get(kind) or []:
            low, high = float(entry["MinValue"]), float(entry["MaxValue"])
            if entry.get("ScalingType") == "Logarithmic" and low > 0:
                value = math.exp(rng.uniform(math.log(low), math.log(high)))
            else:
                value = rng.uniform(low, high)
            if kind == "IntegerParameterRanges":
                values[entry["Name"]] = str(min(int(high), max(int(low), round(value))))
            else:
                values[entry["Name"]] = repr(value)
    for entry in ranges.get("CategoricalParameterRanges") or []:
        values[entry["Name"]] = rng.choice(list(entry["Values"]))
    return values


def _objective(definition: dict[str, Any], metric_name: str) -> Optional[str]:
    for metric in (definition.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []:
        if metric.get("Name") == metric_name:
            return metric.get("Regex")
    return None


def _download_channel(s3, uri: str, target: Path) -> None:
    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents") or []:
            relative = item["Key"][len(prefix):].lstrip("/") or Path(item["Key"]).name
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(path))


def run_trial(s3, job: dict[str, Any], trial_name: str, hyperparameters: dict[str, str],
              objective_regex: Optional[str]) -> dict[str, Any]:
    """Run one trial as the training container would; its status, metric and failure reason."""
    definition = job["TrainingJobDefinition"]
    with tempfile.TemporaryDirectory(prefix=f"{trial_name}-") as tmp:
        ml = Path(tmp) / "opt" / "ml"
        config_dir, data_dir = ml / "input" / "config", ml / "input" / "data"
        model_dir, output_dir = ml / "model", ml / "output"
        for directory in (config_dir, data_dir, model_dir, output_dir / "data"):
            directory.mkdir(parents=True)
        channels = [c["ChannelName"] for c in definition.get("InputDataConfig") or []]
        (config_dir / "hyperparameters.json").write_text(json.dumps(hyperparameters))
        (config_dir / "inputdataconfig.json").write_text(json.dumps(
            {c: {"TrainingInputMode": "File"} for c in channels}))
        env = {**os.environ, "TRAINING_JOB_NAME": trial_name, "SM_MODEL_DIR": str(model_dir),
               "SM_INPUT_DIR": str(ml / "input"), "SM_INPUT_CONFIG_DIR": str(config_dir),
               "SM_OUTPUT_DIR": str(output_dir), "SM_OUTPUT_DATA_DIR": str(output_dir / "data"),
               "SM_CHANNELS": json.dumps(channels), "SM_HPS": json.dumps(hyperparameters),
               "SM_CURRENT_HOST": "algo-1", "SM_HOSTS": json.dumps(["algo-1"])}
        for config in definition.get("InputDataConfig") or []:
            channel = config["ChannelName"]
            _download_channel(s3, config["DataSource"]["S3DataSource"]["S3Uri"],
                              data_dir / channel)
            env[f"SM_CHANNEL_{channel.upper()}"] = str(data_dir / channel)
        limit = (definition.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", 3600)
        try:
            done = subprocess.run(TRAINING_PROGRAM, cwd=tmp, env=env, capture_output=True,
                                  text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return {"status": "Stopped", "reason": f"MaxRuntimeExceeded: {limit} s"}
        log = done.stdout + done.stderr
        if done.returncode != 0:
            failure = output_dir / "failure"
            reason = failure.read_text() if failure.exists() else log[-LOG_TAIL:]
            return {"status": "Failed", "reason": f"AlgorithmError: {reason}"}
        values = re.findall(objective_regex, log) if objective_regex else []
        tarball = Path(tmp) / "model.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            for path in sorted(model_dir.rglob("*")):
                tar.add(path, arcname=path.relative_to(model_dir).as_posix())
        output = urlparse(definition["OutputDataConfig"]["S3OutputPath"])
        key = "/".join(p for p in (output.path.strip("/"), trial_name, "output", "model.tar.gz")
                       if p)
        s3.upload_file(str(tarball), output.netloc, key)
        return {"status": "Completed", "metric": float(values[-1]) if values else None}


def _summary(job, trial_name: str, hyperparameters: dict[str, str], tuned: set[str],
             outcome: dict[str, Any], started, metric_name: str, goal: str) -> dict[str, Any]:
    from moto.core.utils import utcnow

    summary = {
        "TrainingJobName": trial_name,
        "TrainingJobArn": job.arn.split(":hyper-parameter-tuning-job/")[0]
        + f":training-job/{trial_name}",
        "TuningJobName": job.hyper_parameter_tuning_job_name,
        "CreationTime": started, "TrainingStartTime": started, "TrainingEndTime": utcnow(),
        "TrainingJobStatus": outcome["status"],
        "TunedHyperParameters": {k: v for k, v in hyperparameters.items() if k in tuned},
        "ObjectiveStatus": "Succeeded" if outcome.get("metric") is not None else "Failed",
    }
    if outcome.get("reason"):
        summary["FailureReason"] = outcome["reason"][:1024]
    if outcome.get("metric") is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": goal, "MetricName": metric_name, "Value": outcome["metric"]}
    return summary


def run_tuning_job(job, s3) -> None:
    """Run a recorded tuning job's trials and report the outcome on it, as SageMaker would."""
    from moto.core.utils import utcnow

    config = job.hyper_parameter_tuning_job_config
    definition = job.training_job_definition
    objective = config["HyperParameterTuningJobObjective"]
    regex = _objective(definition, objective["MetricName"])
    ranges = config.get("ParameterRanges") or {}
    tuned = {e["Name"] for entries in ranges.values() for e in entries or []}
    rng = random.Random(config.get("RandomSeed", 0))
    limit = int(config["ResourceLimits"]["MaxNumberOfTrainingJobs"])
    static = definition.get("StaticHyperParameters") or {}
    for index in range(1, limit + 1):
        trial_name = f"{job.hyper_parameter_tuning_job_name}-{index:03d}-{uuid.uuid4().hex[:8]}"
        hyperparameters = {**static, **sample_hyperparameters(ranges, rng),
                           "_tuning_objective_metric": objective["MetricName"]}
        started = utcnow()
        try:
            outcome = run_trial(s3, {"TrainingJobDefinition": definition}, trial_name,
                                hyperparameters, regex)
        except Exception as error:  # noqa: BLE001 - a trial's error is its FailureReason
            outcome = {"status": "Failed", "reason": f"ClientError: {error}"}
        job.trials.append(_summary(job, trial_name, hyperparameters, tuned, outcome, started,
                                   objective["MetricName"], objective["Type"]))
        counters = job.training_job_status_counters
        counters["Completed" if outcome["status"] == "Completed" else "NonRetryableError"] += 1
        counters["InProgress"] = 0
    scored = [t for t in job.trials if "FinalHyperParameterTuningJobObjectiveMetric" in t]
    job.objective_status_counters = {"Succeeded": len(scored),
                                     "Failed": len(job.trials) - len(scored), "Pending": 0}
    if scored:
        sign = 1 if objective["Type"] == "Maximize" else -1
        best = max(scored, key=lambda t: sign * t["FinalHyperParameterTuningJobObjectiveMetric"][
            "Value"])
        job.best_training_job = job.OverallBestTrainingJob = best
        job.hyper_parameter_tuning_job_status = "Completed"
    else:
        first = job.trials[0].get("FailureReason", "") if job.trials else ""
        job.failure_reason = f"All training jobs failed. {first}"[:1024]
        job.hyper_parameter_tuning_job_status = "Failed"
    job.hyper_parameter_tuning_end_time = job.last_modified_time = utcnow()


def _s3_for(uri: str, region: str):
    import boto3

    parsed = urlparse(uri)
    # moto accepts any credentials; the trials read and write the server's own S3
    return boto3.client("s3", endpoint_url=f"{parsed.scheme}://{parsed.netloc}",
                        region_name=region, aws_access_key_id="stack",
                        aws_secret_access_key="stack")


def tuning_handlers() -> dict[str, Any]:
    """SageMakerResponse methods: CreateHyperParameterTuningJob that runs the trials, and
    ListTrainingJobsForHyperParameterTuningJob."""
    from moto.sagemaker.responses import SageMakerResponse

    create = getattr(SageMakerResponse.create_hyper_parameter_tuning_job, "__wrapped__",
                     SageMakerResponse.create_hyper_parameter_tuning_job)

    def create_hyper_parameter_tuning_job(self):
        result = create(self)
        job = self.sagemaker_backend.hyper_parameter_tuning_jobs[
            self._get_param("HyperParameterTuningJobName")]
        # moto's canned outcome is replaced by the trials' own
        job.hyper_parameter_tuning_job_status = "InProgress"
        job.best_training_job = job.OverallBestTrainingJob = None
        job.hyper_parameter_tuning_end_time = None
        job.training_job_status_counters = {"Completed": 0, "InProgress": 1, "RetryableError": 0,
                                            "NonRetryableError": 0, "Stopped": 0}
        job.objective_status_counters = {"Succeeded": 0, "Pending": 1, "Failed": 0}
        job.trials = []
        s3 = _s3_for(self.uri, self.region)
        threading.Thread(target=run_tuning_job, args=(job, s3), daemon=True,
                         name=f"tuning-{job.hyper_parameter_tuning_job_name}").start()
        return result

    create_hyper_parameter_tuning_job.__wrapped__ = create

    def list_training_jobs_for_hyper_parameter_tuning_job(self):
        from moto.core.responses import ActionResult
        from moto.sagemaker.exceptions import ValidationError

        name = self._get_param("HyperParameterTuningJobName")
        job = self.sagemaker_backend.hyper_parameter_tuning_jobs.get(name)
        if job is None:
            raise ValidationError(message=f"Could not find hyper parameter tuning job '{name}'.")
        trials = list(getattr(job, "trials", []))
        start = int(self._get_param("NextToken") or 0)
        size = int(self._get_param("MaxResults") or 10)
        page = {"TrainingJobSummaries": trials[start:start + size]}
        if start + size < len(trials):
            page["NextToken"] = str(start + size)
        return ActionResult(page)

    return {"create_hyper_parameter_tuning_job": create_hyper_parameter_tuning_job,
            "list_training_jobs_for_hyper_parameter_tuning_job":
                list_training_jobs_for_hyper_parameter_tuning_job}


def add_tuning_trials() -> None:
    """Give moto's SageMaker tuning jobs that run their trials (see the module's docstring)."""
    from moto.sagemaker.responses import SageMakerResponse

    for name, handler in tuning_handlers().items():
        setattr(SageMakerResponse, name, handler)
