"""SageMaker: tuning and publication control-plane calls against a moto server; the training entry
point run for real as SageMaker would run it.

What moto 5.2.5 simulates, and so what these tests can show:
- tuning jobs are stored as sent and reported Completed at once, with a canned best trial (moto runs
  no training); `wait_tuning_job` is exercised on that and on a job whose state is set to Failed;
- endpoints are InService at once; UpdateEndpoint is not implemented at all (HTTP 500), so the
  `moto_update_endpoint` fixture adds it to the running server with the outcome AWS documents
  (the endpoint serves the new config; its fleet follows the config's variants), the one the
  stack's moto server has (`intent_resources.stack_moto`).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import uuid

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from intent_assets.training.sagemaker_entry import main as entry_main
from intent_assets.training.sagemaker_entry import metric_line, parse_hyperparameters
from intent_resources.sagemaker_common import SageMakerError, sagemaker_name
from intent_resources.sagemaker_endpoint import SageMakerEndpointResource, endpoint_ready
from intent_resources.sagemaker_tuning import (
    OBJECTIVE_METRIC,
    SageMakerTuningResource,
    metric_regex,
    tuning_result,
)

ROLE = "arn:aws:iam::123456789012:role/intent-sagemaker"
TRAINING_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/intent-train:1"
INFERENCE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/intent-serve:1"

RANGES = {
    "IntegerParameterRanges": [
        {"Name": "num_leaves", "MinValue": "15", "MaxValue": "255", "ScalingType": "Logarithmic"},
        {"Name": "min_data_in_leaf", "MinValue": "10", "MaxValue": "500", "ScalingType": "Auto"},
    ],
    "ContinuousParameterRanges": [
        {"Name": "learning_rate", "MinValue": "0.01", "MaxValue": "0.3",
         "ScalingType": "Logarithmic"},
        {"Name": "scale_pos_weight", "MinValue": "1.0", "MaxValue": "20.0", "ScalingType": "Auto"},
    ],
}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _moto_backend():
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]


@pytest.fixture
def sagemaker(moto_endpoint) -> SageMakerEndpointResource:
    resource = SageMakerEndpointResource(endpoint_url=moto_endpoint, role_arn=ROLE,
                                         inference_image=INFERENCE_IMAGE,
                                         bucket=_unique("intent-models"))
    resource.s3.create_bucket(Bucket=resource.bucket)
    return resource


@pytest.fixture
def tuning(moto_endpoint) -> SageMakerTuningResource:
    resource = SageMakerTuningResource(endpoint_url=moto_endpoint, role_arn=ROLE,
                                       training_image=TRAINING_IMAGE,
                                       bucket=_unique("intent-models"))
    resource.s3.create_bucket(Bucket=resource.bucket)
    return resource


@pytest.fixture
def moto_update_endpoint(monkeypatch):
    """Give the moto server the UpdateEndpoint it lacks (5.2.5 answers it with HTTP 500), as
    the stack's moto server has it (`intent_resources.stack_moto`)."""
    from moto.sagemaker.responses import SageMakerResponse

    from intent_resources.stack_moto import update_endpoint

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)


def _model_tarball(path, version: str) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in (("booster.txt", "tree\n"), ("version.txt", version)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


# -- names and pure pieces ----------------------------------------------------------------------

def test_sagemaker_names_carry_the_version_and_stay_within_limits():
    assert sagemaker_name("intent-ep", "2024.06.01_ab:c") == "intent-ep-2024-06-01-ab-c"
    with pytest.raises(ValueError, match="limit is 32"):
        sagemaker_name("x" * 40, max_length=32)
    with pytest.raises(ValueError, match="no usable characters"):
        sagemaker_name("__", "..")


def test_the_metric_regex_reads_the_line_the_entry_point_prints():
    regex = metric_regex(OBJECTIVE_METRIC)
    assert regex == r"validation:pr_auc=([0-9\.]+)"
    match = re.search(regex, "[0] " + metric_line(0.000012345) + "\n")
    assert match and float(match.group(1)) == pytest.approx(0.000012, abs=1e-9)


def test_tuning_result_merges_static_and_tuned_hyperparameters_typed():
    description = {
        "HyperParameterTuningJobName": "t1", "HyperParameterTuningJobStatus": "Completed",
        "HyperParameterTuningJobConfig": {"ParameterRanges": RANGES},
        "TrainingJobDefinition": {"StaticHyperParameters": {"label": "label", "seed": "7"},
                                  "OutputDataConfig": {"S3OutputPath": "s3://b/p/out/"}},
        "BestTrainingJob": {"TrainingJobName": "t1-004-abc",
                            "TunedHyperParameters": {"num_leaves": "63", "learning_rate": "0.05",
                                                     "scale_pos_weight": "3"},
                            "FinalHyperParameterTuningJobObjectiveMetric": {
                                "MetricName": OBJECTIVE_METRIC, "Value": 0.41}},
    }
    result = tuning_result(description)
    assert result["hyperparameters"] == {"label": "label", "seed": 7, "num_leaves": 63,
                                         "learning_rate": 0.05, "scale_pos_weight": 3.0}
    assert isinstance(result["hyperparameters"]["scale_pos_weight"], float)
    assert result["tuned_hyperparameters"]["num_leaves"] == 63
    assert result["objective_value"] == 0.41
    assert result["model_data_uri"] == "s3://b/p/out/t1-004-abc/output/model.tar.gz"


def test_tuning_result_raises_with_the_failure_reason():
    with pytest.raises(SageMakerError, match="t2 ended Failed: AlgorithmError: boom"):
        tuning_result({"HyperParameterTuningJobName": "t2",
                       "HyperParameterTuningJobStatus": "Failed",
                       "FailureReason": "AlgorithmError: boom"})
    with pytest.raises(SageMakerError, match="without a successful training job"):
        tuning_result({"HyperParameterTuningJobName": "t3",
                       "HyperParameterTuningJobStatus": "Completed"})


def test_endpoint_ready_waits_through_transitions_and_reports_failures_and_rollbacks():
    base = {"EndpointName": "ep", "EndpointConfigName": "ep-v2"}
    assert endpoint_ready({**base, "EndpointStatus": "Updating"}, "ep-v2") is False
    assert endpoint_ready({**base, "EndpointStatus": "InService"}, "ep-v2") is True
    with pytest.raises(SageMakerError, match="ep is Failed: image pull failed"):
        endpoint_ready({**base, "EndpointStatus": "Failed", "FailureReason": "image pull failed"},
                       "ep-v2")
    rolled_back = {"EndpointName": "ep", "EndpointConfigName": "ep-v1",
                   "EndpointStatus": "InService", "FailureReason": "health check failed"}
    with pytest.raises(SageMakerError, match="rolled back \\(health check failed\\)"):
        endpoint_ready(rolled_back, "ep-v2")


# -- tuning against moto ------------------------------------------------------------------------

def test_tuning_job_is_created_bayesian_with_the_ranges_sent(tuning):
    name = _unique("tune")
    arn = tuning.start_tuning_job(
        name, "s3://data/train/", "s3://data/validation/", RANGES, max_jobs=20, max_parallel=2,
        static_hyperparameters={"label": "label", "num_iterations": 2000}, seed=11)
    assert arn.endswith(f"hyper-parameter-tuning-job/{name}")

    described = tuning.sagemaker.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name)
    config = described["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["ParameterRanges"] == RANGES
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize",
                                                          "MetricName": "validation:pr_auc"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 20,
                                        "MaxParallelTrainingJobs": 2}
    assert config["RandomSeed"] == 11
    definition = described["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["TrainingImage"] == TRAINING_IMAGE
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == [
        {"Name": "validation:pr_auc", "Regex": r"validation:pr_auc=([0-9\.]+)"}]
    assert definition["StaticHyperParameters"] == {"label": "label", "num_iterations": "2000"}
    assert {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
            for c in definition["InputDataConfig"]} == {"train": "s3://data/train/",
                                                        "validation": "s3://data/validation/"}
    assert definition["RoleArn"] == ROLE


def test_bad_tuning_requests_fail_before_reaching_sagemaker(tuning):
    with pytest.raises(ValueError, match="nothing to tune"):
        tuning.start_tuning_job("t-empty", "s3://d/t/", "s3://d/v/", {}, 4, 1)
    with pytest.raises(ValueError, match="unknown parameter range kinds"):
        tuning.start_tuning_job("t-kind", "s3://d/t/", "s3://d/v/",
                                {"IntegerRanges": []}, 4, 1)
    with pytest.raises(ValueError, match="both tuned and static"):
        tuning.start_tuning_job("t-clash", "s3://d/t/", "s3://d/v/", RANGES, 4, 1,
                                static_hyperparameters={"num_leaves": 31})
    with pytest.raises(ValueError, match="max_parallel"):
        tuning.start_tuning_job("t-par", "s3://d/t/", "s3://d/v/", RANGES, 2, 3)
    with pytest.raises(ValueError, match="not valid for SageMaker"):
        tuning.start_tuning_job("tuning_job.1", "s3://d/t/", "s3://d/v/", RANGES, 4, 1)
    with pytest.raises(ValueError, match="not an s3:// URI"):
        tuning.start_tuning_job("t-uri", "/local/train", "s3://d/v/", RANGES, 4, 1)


def test_a_second_tuning_job_with_the_same_name_is_refused_clearly(tuning):
    name = _unique("dup")
    tuning.start_tuning_job(name, "s3://d/t/", "s3://d/v/", RANGES, 4, 1)
    with pytest.raises(SageMakerError,
                       match=f"could not start tuning job {name}: .*already exists"):
        tuning.start_tuning_job(name, "s3://d/t/", "s3://d/v/", RANGES, 4, 1)


def test_wait_tuning_job_returns_the_best_trial_moto_reports(tuning):
    # moto completes a tuning job at once with a canned best trial; the values checked are the ones
    # DescribeHyperParameterTuningJob returns, plus what we sent (static values, output path).
    name = _unique("wait")
    tuning.start_tuning_job(name, "s3://d/t/", "s3://d/v/", RANGES, 4, 1,
                            static_hyperparameters={"label": "label", "seed": 42})
    described = tuning.describe_tuning_job(name)
    best = described["BestTrainingJob"]

    result = tuning.wait_tuning_job(name, poll_s=0, timeout_s=5)
    assert result["status"] == "Completed"
    assert result["best_training_job_name"] == best["TrainingJobName"]
    assert result["objective_value"] == float(
        best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    assert result["hyperparameters"]["label"] == "label"
    assert result["hyperparameters"]["seed"] == 42
    assert result["model_data_uri"] == (f"s3://{tuning.bucket}/intent/tuning/{name}/output/"
                                        f"{best['TrainingJobName']}/output/model.tar.gz")


def test_wait_tuning_job_raises_the_failure_reason_of_a_failed_job(tuning):
    name = _unique("fail")
    tuning.start_tuning_job(name, "s3://d/t/", "s3://d/v/", RANGES, 4, 1)
    # moto never fails a job by itself: set the state SageMaker would report.
    job = _moto_backend().hyper_parameter_tuning_jobs[name]
    job.hyper_parameter_tuning_job_status = "Failed"
    job.failure_reason = "All training jobs failed. AlgorithmError: no label column"
    with pytest.raises(SageMakerError, match="ended Failed: All training jobs failed"):
        tuning.wait_tuning_job(name, poll_s=0, timeout_s=5)
    with pytest.raises(SageMakerError, match="Could not find"):
        tuning.wait_tuning_job(_unique("missing"), poll_s=0, timeout_s=5)


def test_wait_tuning_job_times_out_on_a_job_still_running(tuning):
    name = _unique("slow")
    tuning.start_tuning_job(name, "s3://d/t/", "s3://d/v/", RANGES, 4, 1)
    _moto_backend().hyper_parameter_tuning_jobs[name].hyper_parameter_tuning_job_status = \
        "InProgress"
    with pytest.raises(TimeoutError, match="still InProgress"):
        tuning.wait_tuning_job(name, poll_s=0, timeout_s=0)


# -- S3 artifacts and channels ------------------------------------------------------------------

def test_upload_artifact_round_trips_through_s3(sagemaker, tmp_path):
    local = _model_tarball(tmp_path / "model.tar.gz", "v1")
    uri = sagemaker.upload_artifact(local, "v1")
    assert uri == f"s3://{sagemaker.bucket}/intent/models/v1/model.tar.gz"

    body = sagemaker.s3.get_object(Bucket=sagemaker.bucket,
                                   Key="intent/models/v1/model.tar.gz")["Body"].read()
    assert body == (tmp_path / "model.tar.gz").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["booster.txt", "version.txt"]
        assert tar.extractfile("version.txt").read() == b"v1"


def test_upload_artifact_refuses_what_cannot_be_served(sagemaker, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sagemaker.upload_artifact(str(tmp_path / "absent.tar.gz"), "v1")
    not_tar = tmp_path / "model.tar.gz"
    not_tar.write_text("not an archive")
    with pytest.raises(SageMakerError, match="not a tar archive"):
        sagemaker.upload_artifact(str(not_tar), "v1")
    elsewhere = SageMakerEndpointResource(endpoint_url=sagemaker.endpoint_url, role_arn=ROLE,
                                          inference_image=INFERENCE_IMAGE,
                                          bucket=_unique("no-such-bucket"))
    with pytest.raises(SageMakerError, match="NoSuchBucket"):
        elsewhere.upload_artifact(_model_tarball(tmp_path / "ok.tar.gz", "v1"), "v1")


def test_upload_channel_puts_every_file_under_the_channel_prefix(tuning, tmp_path):
    channel = tmp_path / "train"
    (channel / "date=2024-01-01").mkdir(parents=True)
    (channel / "date=2024-01-01" / "part-0.parquet").write_bytes(b"a")
    (channel / "part-1.parquet").write_bytes(b"b")
    uri = tuning.upload_channel(str(channel), "run1", "train")
    assert uri == f"s3://{tuning.bucket}/intent/tuning/run1/input/train/"
    listed = tuning.s3.list_objects_v2(Bucket=tuning.bucket,
                                       Prefix="intent/tuning/run1/input/train/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        "intent/tuning/run1/input/train/date=2024-01-01/part-0.parquet",
        "intent/tuning/run1/input/train/part-1.parquet"]


# -- publication against moto -------------------------------------------------------------------

def test_publish_creates_then_updates_the_endpoint_to_the_new_version(sagemaker, tmp_path,
                                                                     moto_update_endpoint):
    endpoint = _unique("intent-ep")
    v1_uri = sagemaker.upload_artifact(_model_tarball(tmp_path / "v1.tar.gz", "v1"), "v1")
    first = sagemaker.publish("v1", v1_uri, endpoint, poll_s=0, timeout_s=5)
    assert first["action"] == "created"
    assert first["status"] == "InService"
    assert (first["model_name"], first["endpoint_config_name"]) == (f"{endpoint}-v1",) * 2
    model = sagemaker.sagemaker.describe_model(ModelName=f"{endpoint}-v1")
    assert model["PrimaryContainer"]["ModelDataUrl"] == v1_uri
    assert model["PrimaryContainer"]["Image"] == INFERENCE_IMAGE
    assert model["ExecutionRoleArn"] == ROLE
    config = sagemaker.sagemaker.describe_endpoint_config(EndpointConfigName=f"{endpoint}-v1")
    assert [v["ModelName"] for v in config["ProductionVariants"]] == [f"{endpoint}-v1"]
    assert sagemaker.sagemaker.describe_endpoint(
        EndpointName=endpoint)["EndpointConfigName"] == f"{endpoint}-v1"

    v2_uri = sagemaker.upload_artifact(_model_tarball(tmp_path / "v2.tar.gz", "v2"), "v2")
    second = sagemaker.publish("v2", v2_uri, endpoint, poll_s=0, timeout_s=5)
    assert second["action"] == "updated"
    assert second["previous_endpoint_config_name"] == f"{endpoint}-v1"
    assert second["model_data_uri"] == v2_uri and second["version"] == "v2"
    described = sagemaker.sagemaker.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointConfigName"] == f"{endpoint}-v2"
    assert described["EndpointStatus"] == "InService"
    assert sagemaker.sagemaker.describe_model(
        ModelName=f"{endpoint}-v2")["PrimaryContainer"]["ModelDataUrl"] == v2_uri

    # A retried publication of the serving version changes nothing.
    again = sagemaker.publish("v2", v2_uri, endpoint, poll_s=0, timeout_s=5)
    assert again["action"] == "unchanged"
    assert sagemaker.sagemaker.describe_endpoint(
        EndpointName=endpoint)["EndpointConfigName"] == f"{endpoint}-v2"


def test_publish_refuses_an_artifact_missing_from_s3(sagemaker):
    endpoint = _unique("intent-ep")
    missing = f"s3://{sagemaker.bucket}/intent/models/v9/model.tar.gz"
    with pytest.raises(SageMakerError, match="v9/model.tar.gz is not readable in S3"):
        sagemaker.publish("v9", missing, endpoint, poll_s=0, timeout_s=5)
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="Could not find model"):
        sagemaker.sagemaker.describe_model(ModelName=f"{endpoint}-v9")


def test_publish_refuses_to_reuse_a_version_for_another_artifact(sagemaker, tmp_path):
    endpoint = _unique("intent-ep")
    v1_uri = sagemaker.upload_artifact(_model_tarball(tmp_path / "v1.tar.gz", "v1"), "v1")
    sagemaker.publish("v1", v1_uri, endpoint, poll_s=0, timeout_s=5)
    other = sagemaker.upload_artifact(_model_tarball(tmp_path / "x.tar.gz", "x"), "other")
    with pytest.raises(SageMakerError, match="already exists with artifact .*new version"):
        sagemaker.publish("v1", other, endpoint, poll_s=0, timeout_s=5)


def test_publish_onto_a_failed_endpoint_says_why_and_what_to_do(sagemaker, tmp_path):
    endpoint = _unique("intent-ep")
    v1_uri = sagemaker.upload_artifact(_model_tarball(tmp_path / "v1.tar.gz", "v1"), "v1")
    sagemaker.publish("v1", v1_uri, endpoint, poll_s=0, timeout_s=5)
    # moto endpoints never fail by themselves: set the state SageMaker would report.
    state = _moto_backend().endpoints[endpoint]
    state.endpoint_status, state.failure_reason = "Failed", "CannotStartContainerError"
    v2_uri = sagemaker.upload_artifact(_model_tarball(tmp_path / "v2.tar.gz", "v2"), "v2")
    with pytest.raises(SageMakerError, match="Failed \\(CannotStartContainerError\\).*deleted"):
        sagemaker.publish("v2", v2_uri, endpoint, poll_s=0, timeout_s=5)


def test_wait_endpoint_times_out_on_an_endpoint_stuck_updating(sagemaker, tmp_path):
    endpoint = _unique("intent-ep")
    v1_uri = sagemaker.upload_artifact(_model_tarball(tmp_path / "v1.tar.gz", "v1"), "v1")
    sagemaker.publish("v1", v1_uri, endpoint, poll_s=0, timeout_s=5)
    _moto_backend().endpoints[endpoint].endpoint_status = "Updating"
    with pytest.raises(TimeoutError, match="still Updating"):
        sagemaker.wait_endpoint(endpoint, f"{endpoint}-v1", poll_s=0, timeout_s=0)


# -- the training entry point -------------------------------------------------------------------

def _synthetic(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2, noise = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    p = 1.0 / (1.0 + np.exp(-(2.5 * x1 + 1.0 * x2 - 2.0)))
    return pd.DataFrame({
        "x1": x1, "x2": x2, "noise": noise,
        "device": rng.choice(["mobile", "desktop"], n),      # a string column: not a feature
        "is_returning": rng.random(n) < 0.3,
        "w": np.where(rng.random(n) < 0.5, 1.0, 2.0),
        "purchased": (rng.random(n) < p).astype(int),
    })


def test_entry_point_trains_prints_the_metric_and_writes_a_loadable_booster(tmp_path, repo_root):
    train_dir, valid_dir = tmp_path / "train", tmp_path / "validation"
    model_dir = tmp_path / "model"
    (train_dir / "date=2024-01-01").mkdir(parents=True)
    valid_dir.mkdir()
    train = _synthetic(3000, seed=1)
    train.iloc[:1500].to_parquet(train_dir / "date=2024-01-01" / "part-0.parquet")
    train.iloc[1500:].to_parquet(train_dir / "part-1.parquet")
    validation = _synthetic(1000, seed=2)
    validation.to_csv(valid_dir / "validation.csv", index=False)
    # As a bring-your-own image gets them: a JSON file of strings; CLI pairs override it.
    hp_file = tmp_path / "hyperparameters.json"
    hp_file.write_text(json.dumps({"label": "purchased", "weight": "w", "num_leaves": "63",
                                   "_tuning_objective_metric": "validation:pr_auc"}))

    completed = subprocess.run(
        [sys.executable, "-m", "intent_assets.training.sagemaker_entry",
         "--train", str(train_dir), "--validation", str(valid_dir), "--model-dir", str(model_dir),
         "--hyperparameters-file", str(hp_file),
         "--num_leaves", "15", "--max_depth", "6", "--min_data_in_leaf", "20",
         "--learning_rate", "0.1", "--num_iterations", "300", "--feature_fraction", "0.9",
         "--bagging_fraction", "0.8", "--lambda_l1", "0.0", "--lambda_l2", "1.0",
         "--scale_pos_weight", "2.0"],
        cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr

    matches = re.findall(metric_regex(OBJECTIVE_METRIC), completed.stdout)
    assert len(matches) == 1, completed.stdout
    pr_auc = float(matches[0])
    base_rate = np.average(validation["purchased"], weights=validation["w"])
    assert base_rate < 0.5 and pr_auc > base_rate + 0.2, (pr_auc, base_rate)

    booster = lgb.Booster(model_file=str(model_dir / "booster.txt"))
    assert booster.feature_name() == ["x1", "x2", "noise", "is_returning"]
    scores = booster.predict(validation[booster.feature_name()].astype(float))
    assert ((scores > 0) & (scores < 1)).all()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["pr_auc"] == pytest.approx(pr_auc, abs=1e-6)
    assert metrics["weighted"] is True
    assert metrics["hyperparameters"]["num_leaves"] == 15   # the CLI pair won over the file
    assert metrics["hyperparameters"]["label"] == "purchased"
    assert booster.current_iteration() == metrics["best_iteration"]


def test_entry_point_failure_reaches_sagemakers_failure_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _synthetic(200, seed=3).to_parquet(data / "part-0.parquet")
    failure = tmp_path / "output" / "failure"
    code = entry_main(["train", "--train", str(data), "--validation", str(data),
                       "--model-dir", str(tmp_path / "model"), "--failure-file", str(failure),
                       "--hyperparameters-file", str(tmp_path / "absent.json"),
                       "--label", "purchased", "--num_leafs", "31"])
    assert code == 1
    assert "unknown hyperparameter 'num_leafs'" in failure.read_text()
    assert not (tmp_path / "model" / "booster.txt").exists()


def test_hyperparameters_are_typed_from_sagemakers_strings():
    hp = parse_hyperparameters({"num_leaves": "63", "max_depth": "-1", "num_iterations": "800.0",
                                "learning_rate": "0.03", "label": '"purchased"',
                                "sagemaker_program": "train.py", "_tuning_objective_metric": "x"})
    assert hp["num_leaves"] == 63 and hp["max_depth"] == -1 and hp["num_iterations"] == 800
    assert hp["learning_rate"] == 0.03 and hp["label"] == "purchased"
    with pytest.raises(ValueError, match="must be an integer"):
        parse_hyperparameters({"num_leaves": "31.5"})
    with pytest.raises(ValueError, match="bagging_fraction must be in"):
        parse_hyperparameters({"bagging_fraction": "0"})
