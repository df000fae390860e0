"""SageMaker real-time endpoints: publish a gated model's archive and serve it blue/green.

Upload ``model.tar.gz`` to S3, `CreateModel` (the inference image + that artifact),
`CreateEndpointConfig` (one production variant), then `CreateEndpoint` for a new endpoint or
`UpdateEndpoint` for an existing one, and wait until it is InService on the new config.
`UpdateEndpoint` is SageMaker's blue/green deployment: a new fleet takes all traffic at once and
the old one is retired only then, so the endpoint keeps serving; if the new fleet fails, SageMaker
rolls back and the endpoint stays InService on the old config, which `publish` reports as a failure.

Names carry the model version (``<endpoint>-<version>`` for model and endpoint config), and
publishing the same version again is a no-op, so a retried publication job is idempotent.
"""

from __future__ import annotations

import tarfile
import time
from pathlib import Path
from typing import Any, Optional

from intent_resources.sagemaker_common import (
    SageMakerBase,
    SageMakerError,
    error_code,
    sagemaker_name,
    split_s3_uri,
)

ENDPOINT_TRANSITIONAL = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
ENDPOINT_FAILED = ("Failed", "UpdateRollbackFailed", "OutOfService")
VARIANT_NAME = "AllTraffic"


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


class SageMakerEndpointResource(SageMakerBase):
    """Publication of model archives to a SageMaker real-time endpoint, through S3."""

    inference_image: str
    endpoint_instance_count: int = 1

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
                                 f"({error_code(error) or error})") from error

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
