"""`tuned_model` with `backend: sagemaker`: a tuning job on a moto server, its trials run as the
training container runs them.

moto records the tuning job and runs nothing; the `trials_on_moto` fixture gives the running server
what the stack's moto server has (`intent_resources.stack_training`): the job's trials run
`sagemaker_entry` in an /opt/ml layout, with the channels and the artifacts in moto's S3.
"""

from __future__ import annotations

import json
import random
import tarfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import build_asset_context

from intent_assets.training.assets import TuningConfig, tuned_model
from intent_assets.training.result import TunedModel
from intent_assets.training.sagemaker_tuner import tune_sagemaker
from intent_assets.training.tuning import SEARCH_SPACE, to_sagemaker_parameter_ranges
from intent_resources.sagemaker_common import SageMakerError, split_s3_uri
from intent_resources.sagemaker_tuning import (
    OBJECTIVE_METRIC,
    SageMakerTuningResource,
    metric_regex,
    normalize_parameter_ranges,
    typed_hyperparameters,
)
from intent_resources.stack_training import sample_hyperparameters
from intent_resources.storage import ArtifactStore, LakeSlice, LakeStorage
from streaming_jobs.feature_spec import DEFAULT_SERVICE, service_features

ROLE = "arn:aws:iam::123456789012:role/intent-sagemaker"
TRAINING_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/intent-train:1"
T0 = pd.Timestamp("2026-10-01", tz="UTC")


@pytest.fixture
def trials_on_moto(monkeypatch):
    """The stack's moto server's tuning jobs (`stack_training`) on the test's moto server."""
    from moto.sagemaker.responses import SageMakerResponse

    from intent_resources.stack_training import tuning_handlers

    for name, handler in tuning_handlers().items():
        monkeypatch.setattr(SageMakerResponse, name, handler, raising=False)


@pytest.fixture
def tuning(moto_endpoint) -> SageMakerTuningResource:
    resource = SageMakerTuningResource(endpoint_url=moto_endpoint, role_arn=ROLE,
                                       training_image=TRAINING_IMAGE, poll_s=0.2,
                                       timeout_s=600, bucket=f"models-{uuid.uuid4().hex[:8]}")
    resource.s3.create_bucket(Bucket=resource.bucket)
    return resource


def service_table(n_sessions: int = 500, seed: int = 0) -> pd.DataFrame:
    """Sessions cut at 1-3 moments with every feature of the default service; the label follows
    two of them."""
    rng = np.random.default_rng(seed)
    specs = service_features(DEFAULT_SERVICE)
    numeric = [s.name for s in specs if s.kind != "string"]
    rows = []
    for s in range(n_sessions):
        signal = rng.normal()
        label = int(rng.random() < 1 / (1 + np.exp(-(-1.5 + 1.8 * signal))))
        for k in range(int(rng.integers(1, 4))):
            row = {"snapshot_id": f"e{s:05d}-{k}", "session_id": f"s{s:05d}",
                   "event_timestamp": T0 + pd.Timedelta(seconds=60 * s + 20 * k),
                   "label": label, "weight": 1.0}
            for spec in specs:
                row[spec.name] = (str(rng.choice(["a", "b", "c"])) if spec.kind == "string"
                                  else float(rng.integers(0, 5)) if spec.kind == "int"
                                  else float(rng.normal()))
            row[numeric[0]] = signal + rng.normal(scale=0.3)
            row[numeric[1]] = float(k) + signal
            rows.append(row)
    return pd.DataFrame(rows)


def _read_tar(s3, uri: str) -> dict:
    bucket, key = split_s3_uri(uri)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    import io

    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
        metrics = json.loads(tar.extractfile("metrics.json").read())
    return {"names": names, "metrics": metrics}


def test_tuned_model_on_sagemaker_takes_the_best_trial_of_a_recorded_tuning_job(
        tuning, trials_on_moto, tmp_path):
    lake = LakeStorage(root=str(tmp_path / "lake"))
    lake.write(service_table(), "training_set")
    models = ArtifactStore(root=str(tmp_path / "models"))
    context = build_asset_context(resources={"models": models, "sagemaker_tuning": tuning})
    output = tuned_model(context, TuningConfig(backend="sagemaker", n_trials=3, seed=3),
                         LakeSlice(lake, "training_set", None))
    tuned = TunedModel.load(Path(output.value["dir"]))
    job_name = output.metadata["tuning_job"].value

    # the job moto recorded: our ranges, the objective with its regex, prod's image and role
    job = tuning.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=job_name)
    config, definition = job["HyperParameterTuningJobConfig"], job["TrainingJobDefinition"]
    assert job["HyperParameterTuningJobStatus"] == "Completed"
    assert config["ParameterRanges"] == normalize_parameter_ranges(
        to_sagemaker_parameter_ranges(tuned.tuning.space))
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize",
                                                          "MetricName": OBJECTIVE_METRIC}
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 3
    spec = definition["AlgorithmSpecification"]
    assert spec["TrainingImage"] == TRAINING_IMAGE and definition["RoleArn"] == ROLE
    assert spec["MetricDefinitions"] == [{"Name": OBJECTIVE_METRIC,
                                          "Regex": metric_regex(OBJECTIVE_METRIC)}]
    # the channels the trials read are in the model bucket
    for channel in definition["InputDataConfig"]:
        bucket, prefix = split_s3_uri(channel["DataSource"]["S3DataSource"]["S3Uri"])
        assert bucket == tuning.bucket
        assert tuning.s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 1

    # three trials ran and were scored; the job's best is the highest metric
    trials = tuning.training_jobs(job_name)
    assert len(trials) == 3 and {t["TrainingJobStatus"] for t in trials} == {"Completed"}
    values = [t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for t in trials]
    assert len(set(values)) > 1, "the trials' sampled values made no difference"
    best = trials[int(np.argmax(values))]
    assert job["BestTrainingJob"]["TrainingJobName"] == best["TrainingJobName"]

    # the tuned model's hyperparameters are the best trial's; its tree count the trial's own
    ranges = config["ParameterRanges"]
    chosen = typed_hyperparameters(best["TunedHyperParameters"], ranges)
    searched = {p.name for p in tuned.tuning.space}
    assert {k: tuned.params[k] for k in searched - {"num_iterations"}} == \
        {k: v for k, v in chosen.items() if k != "num_iterations"}
    assert tuned.tuning.best_pr_auc == pytest.approx(max(values))

    # the best trial's artifact lives in S3 where SageMaker puts it, and is that trial's model
    uri = f"{definition['OutputDataConfig']['S3OutputPath']}/{best['TrainingJobName']}" \
          "/output/model.tar.gz"
    assert output.metadata["best_trial_artifact"].value == uri
    artifact = _read_tar(tuning.s3, uri)
    assert artifact["names"] == ["booster.txt", "metrics.json"]
    assert artifact["metrics"]["pr_auc"] == pytest.approx(max(values), abs=1e-6)
    assert tuned.params["num_iterations"] == artifact["metrics"]["best_iteration"]
    assert tuned.rows["train_after_downsampling"] == artifact["metrics"]["n_train"]
    assert len(tuned.tuning.history) == 3
    # calibration gets the best trial's margins on every validation row
    assert len(tuned.validation_margin) == tuned.rows["validation"]


def test_sagemaker_tuning_without_account_settings_says_what_is_missing():
    unconfigured = SageMakerTuningResource(role_arn="", bucket="", training_image="")
    with pytest.raises(SageMakerError, match="role_arn, bucket, training_image"):
        tune_sagemaker(unconfigured, None, None)


def test_sampled_trial_values_stay_in_their_ranges_and_follow_the_seed():
    ranges = to_sagemaker_parameter_ranges(SEARCH_SPACE, ratio=9.0)
    draws = [sample_hyperparameters(ranges, random.Random(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    for value in [sample_hyperparameters(ranges, random.Random(s)) for s in range(50)]:
        for entry in ranges["IntegerParameterRanges"]:
            assert int(entry["MinValue"]) <= int(value[entry["Name"]]) <= int(entry["MaxValue"])
        for entry in ranges["ContinuousParameterRanges"]:
            assert float(entry["MinValue"]) <= float(value[entry["Name"]]) <= \
                float(entry["MaxValue"])
