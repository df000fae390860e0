"""SageMaker: Automatic Model Tuning for the model, and publication of gated models to an endpoint.

Two control planes through boto3 (no `sagemaker` SDK: it drags in pins we do not want):

- tuning: a Bayesian `CreateHyperParameterTuningJob` whose trials run
  `intent_assets.training.sagemaker_entry` in `training_image`; the objective is the metric that
  program prints (``validation:pr_auc=<value>``), read from its log by a regex;
- publication: upload ``model.tar.gz`` to S3, `CreateModel` (the inference image + that artifact),
  `CreateEndpointConfig` (one production variant), then `CreateEndpoint` for a new endpoint or
  `UpdateEndpoint` for an existing one, and wait until it is InService on the new config.
  `UpdateEndpoint` is SageMaker's blue/green deployment: it provisions a new (green) fleet on the
  new config, shifts all traffic to it at once, and only then retires the old (blue) fleet, so the
  endpoint keeps serving throughout; if the new fleet fails, SageMaker rolls back and the endpoint
  stays InService on the old config, which `publish` reports as a failure.

Names carry the model version (``<endpoint>-<version>`` for model and endpoint config), and
publishing the same version again is a no-op, so a retried publication job is idempotent.
In tests `endpoint_url` points at a moto server.
"""

from __future__ import annotations

import re
import tarfile
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from dagster import ConfigurableResource
from pydantic import PrivateAttr

OBJECTIVE_METRIC = "validation:pr_auc"
RANGE_KINDS = ("IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges")
TUNING_TERMINAL = ("Completed", "Failed", "Stopped")
ENDPOINT_TRANSITIONAL = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
ENDPOINT_FAILED = ("Failed", "UpdateRollbackFailed", "OutOfService")
VARIANT_NAME = "AllTraffic"


class SageMakerError(RuntimeError):
    """A SageMaker job, endpoint or artifact is not what publication or tuning needs; says why."""


# -- pure helpers -------------------------------------------------------------------------------

def metric_regex(metric_name: str) -> str:
    """The regex that reads ``<metric_name>=<value>`` from a training log (fixed-point values)."""
    return re.escape(metric_name) + r"=([0-9\.]+)"


def sagemaker_name(*parts: str, max_length: int = 63) -> str:
    """A SageMaker resource name from parts: alphanumerics and single hyphens, within the limit.

    Anything else (dots, underscores, colons of a version string) becomes a hyphen. Too long is an
    error rather than a truncation, which could make two versions share a name.
    """
    joined = "-".join(str(p) for p in parts)
    name = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]", "-", joined)).strip("-")
    if not name:
        raise ValueError(f"no usable characters for a SageMaker name in {parts!r}")
    if len(name) > max_length:
        raise ValueError(f"SageMaker name {name!r} is {len(name)} characters; the limit is "
                         f"{max_length}")
    return name


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


def endpoint_ready(description: dict[str, Any], expected_config: Optional[str]) -> bool:
    """Whether an endpoint has settled on the expected config; raises if it failed or rolled back.

    False while SageMaker is still creating or updating it. An endpoint back InService on another
    config means the blue/green update failed and SageMaker rolled back.
    """
    name = description.get("EndpointName")
    status = description.get("EndpointStatus")
    reason = description.get("FailureReason") or "no reason given"
    if status in ENDPOINT_TRANSITIONAL:
        return False
    if status in ENDPOINT_FAILED:
        raise SageMakerError(f"endpoint {name} is {status}: {reason}")
    if status != "InService":
        raise SageMakerError(f"endpoint {name} has unexpected status {status!r}")
    current = description.get("EndpointConfigName")
    if expected_config is not None and current != expected_config:
        raise SageMakerError(f"endpoint {name} is InService on {current}, not {expected_config}: "
                             f"the update was rolled back ({reason})")
    return True


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def _error_code(error: Exception) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Code", "")


def _error_message(error: Exception) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Message", str(error))


def _is_missing(error: Exception) -> bool:
    # SageMaker answers Describe* of an unknown resource with ValidationException "Could not find".
    return _error_code(error) in ("ValidationException", "ResourceNotFound") and \
        "could not find" in _error_message(error).lower()


# -- the resource -------------------------------------------------------------------------------

class SageMakerResource(ConfigurableResource):
    """SageMaker tuning jobs and endpoint publication, with artifacts in S3."""

    region_name: str = "us-east-1"
    # A non-AWS endpoint for both SageMaker and S3 (the moto server in tests), else AWS.
    endpoint_url: Optional[str] = None
    role_arn: str
    training_image: str
    inference_image: str
    bucket: str
    prefix: str = "intent"
    instance_type: str = "ml.m5.large"
    endpoint_instance_count: int = 1

    _clients: dict = PrivateAttr(default_factory=dict)

    # -- clients ------------------------------------------------------------------------------
    def _client(self, service: str):
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            self._clients[service] = boto3.client(
                service, endpoint_url=self.endpoint_url, region_name=self.region_name,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        return self._clients[service]

    @property
    def sagemaker(self):
        return self._client("sagemaker")

    @property
    def s3(self):
        return self._client("s3")

    def s3_uri(self, *parts: str) -> str:
        """``s3://<bucket>/<prefix>/<parts...>``."""
        return "s3://" + "/".join([self.bucket, self.prefix.strip("/"), *parts])

    # -- S3 -----------------------------------------------------------------------------------
    def _upload(self, local: Path, uri: str) -> str:
        bucket, key = split_s3_uri(uri)
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.upload_file(str(local), bucket, key)
        except (S3UploadFailedError, ClientError, BotoCoreError) as error:
            # upload_file wraps the ClientError; its message carries the S3 code (NoSuchBucket...).
            raise SageMakerError(f"could not upload {local} to {uri}: {error}") from error
        return uri

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

    def upload_artifact(self, local_tar_path: str, version: str) -> str:
        """Upload a model's ``model.tar.gz`` under its version; the S3 URI for CreateModel."""
        local = Path(local_tar_path)
        if not local.is_file():
            raise FileNotFoundError(f"model artifact {local} does not exist")
        if not tarfile.is_tarfile(local):
            raise SageMakerError(f"model artifact {local} is not a tar archive")
        version_part = sagemaker_name(version)
        return self._upload(local, self.s3_uri("models", version_part, "model.tar.gz"))

    def _require_object(self, uri: str) -> None:
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise SageMakerError(f"model artifact {uri} is not readable in S3 "
                                 f"({_error_code(error) or error})") from error

    # -- tuning -------------------------------------------------------------------------------
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
                                 f"{_error_message(error)}") from error

    def describe_tuning_job(self, name: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return self.sagemaker.describe_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=name)
        except ClientError as error:
            raise SageMakerError(f"tuning job {name}: {_error_message(error)}") from error

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

    # -- publication --------------------------------------------------------------------------
    def _describe_or_none(self, operation: str, **kwargs) -> Optional[dict[str, Any]]:
        from botocore.exceptions import ClientError

        try:
            return getattr(self.sagemaker, operation)(**kwargs)
        except ClientError as error:
            if _is_missing(error):
                return None
            raise SageMakerError(f"{operation} failed: {_error_message(error)}") from error

    def _call(self, operation: str, **kwargs) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return getattr(self.sagemaker, operation)(**kwargs)
        except ClientError as error:
            raise SageMakerError(f"{operation} failed: {_error_message(error)}") from error

    def _ensure_model(self, model_name: str, model_data_uri: str, version: str) -> str:
        existing = self._describe_or_none("describe_model", ModelName=model_name)
        if existing is not None:
            container = existing.get("PrimaryContainer") or {}
            if (container.get("ModelDataUrl"), container.get("Image")) != (model_data_uri,
                                                                          self.inference_image):
                raise SageMakerError(
                    f"model {model_name} already exists with artifact "
                    f"{container.get('ModelDataUrl')} and image {container.get('Image')}; "
                    f"publish {model_data_uri} under a new version")
            return "reused"
        self._call("create_model", ModelName=model_name, ExecutionRoleArn=self.role_arn,
                   PrimaryContainer={"Image": self.inference_image,
                                     "ModelDataUrl": model_data_uri,
                                     "Environment": {"INTENT_MODEL_VERSION": version}},
                   Tags=[{"Key": "intent:model_version", "Value": version}])
        return "created"

    def _ensure_endpoint_config(self, config_name: str, model_name: str, version: str) -> str:
        existing = self._describe_or_none("describe_endpoint_config",
                                          EndpointConfigName=config_name)
        if existing is not None:
            models = [v.get("ModelName") for v in existing.get("ProductionVariants") or []]
            if models != [model_name]:
                raise SageMakerError(f"endpoint config {config_name} already exists serving "
                                     f"{models}, not {model_name}")
            return "reused"
        self._call("create_endpoint_config", EndpointConfigName=config_name,
                   ProductionVariants=[{"VariantName": VARIANT_NAME, "ModelName": model_name,
                                        "InitialInstanceCount": self.endpoint_instance_count,
                                        "InstanceType": self.instance_type,
                                        "InitialVariantWeight": 1.0}],
                   Tags=[{"Key": "intent:model_version", "Value": version}])
        return "created"

    def wait_endpoint(self, endpoint_name: str, expected_config: Optional[str] = None,
                      poll_s: float = 15.0, timeout_s: float = 3600.0) -> dict[str, Any]:
        """Wait until an endpoint is InService (on `expected_config` if given); its description."""
        deadline = time.monotonic() + timeout_s
        while True:
            description = self._call("describe_endpoint", EndpointName=endpoint_name)
            if endpoint_ready(description, expected_config):
                return description
            if time.monotonic() >= deadline:
                raise TimeoutError(f"endpoint {endpoint_name} still "
                                   f"{description.get('EndpointStatus')} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def served_model_data_uri(self, endpoint_name: str) -> Optional[str]:
        """The S3 URI of the artifact the endpoint serves now; None when there is no endpoint."""
        endpoint = self._describe_or_none("describe_endpoint", EndpointName=endpoint_name)
        if endpoint is None or not endpoint.get("EndpointConfigName"):
            return None
        config = self._call("describe_endpoint_config",
                            EndpointConfigName=endpoint["EndpointConfigName"])
        variants = config.get("ProductionVariants") or []
        if not variants:
            return None
        model = self._call("describe_model", ModelName=variants[0]["ModelName"])
        return (model.get("PrimaryContainer") or {}).get("ModelDataUrl")

    def download(self, uri: str, local_path: Path) -> Path:
        """Copy an S3 object to `local_path` (atomically: a partial file never has that name)."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3_uri(uri)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        partial = local_path.with_name(local_path.name + ".partial")
        try:
            self.s3.download_file(bucket, key, str(partial))
        except (ClientError, BotoCoreError) as error:
            raise SageMakerError(f"could not download {uri}: {error}") from error
        partial.replace(local_path)
        return local_path

    def publish(self, version: str, model_data_uri: str, endpoint_name: str,
                poll_s: float = 15.0, timeout_s: float = 3600.0) -> dict[str, Any]:
        """Serve a model version on the endpoint: create it, or update it blue/green; then wait.

        Returns endpoint, endpoint config, model, version, artifact URI, status and what was done
        (``created``, ``updated``, or ``unchanged`` when the endpoint already serves this version).
        """
        endpoint = sagemaker_name(endpoint_name)
        if endpoint != endpoint_name:
            raise ValueError(f"endpoint name {endpoint_name!r} is not valid for SageMaker; "
                             f"try {endpoint!r}")
        model_name = sagemaker_name(endpoint, version)
        config_name = model_name
        # CreateModel does not look at the artifact; a missing one would only fail the endpoint
        # after minutes of provisioning.
        self._require_object(model_data_uri)
        self._ensure_model(model_name, model_data_uri, version)
        self._ensure_endpoint_config(config_name, model_name, version)

        current = self._describe_or_none("describe_endpoint", EndpointName=endpoint)
        previous_config = None
        if current is None:
            self._call("create_endpoint", EndpointName=endpoint, EndpointConfigName=config_name,
                       Tags=[{"Key": "intent:model_version", "Value": version}])
            action = "created"
        else:
            if current.get("EndpointStatus") in ENDPOINT_TRANSITIONAL:
                # UpdateEndpoint is refused while another deployment runs; let it finish first.
                current = self.wait_endpoint(endpoint, None, poll_s, timeout_s)
            elif current.get("EndpointStatus") in ENDPOINT_FAILED:
                raise SageMakerError(
                    f"endpoint {endpoint} is {current['EndpointStatus']} "
                    f"({current.get('FailureReason') or 'no reason given'}); it cannot be updated "
                    f"and must be deleted before publishing")
            previous_config = current.get("EndpointConfigName")
            if previous_config == config_name:
                action = "unchanged"
            else:
                self._call("update_endpoint", EndpointName=endpoint,
                           EndpointConfigName=config_name,
                           # Spelled out although it is SageMaker's default: blue/green, all
                           # traffic at once, old fleet retired once the new one is in service.
                           DeploymentConfig={"BlueGreenUpdatePolicy": {
                               "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE",
                                                               "WaitIntervalInSeconds": 0},
                               "TerminationWaitInSeconds": 0}})
                action = "updated"
        described = self.wait_endpoint(endpoint, config_name, poll_s, timeout_s)
        return {
            "endpoint_name": endpoint,
            "endpoint_arn": described.get("EndpointArn"),
            "endpoint_config_name": config_name,
            "model_name": model_name,
            "version": version,
            "model_data_uri": model_data_uri,
            "status": described.get("EndpointStatus"),
            "action": action,
            "previous_endpoint_config_name": previous_config,
        }
