"""The AWS side as code: deploy intent's CloudFormation stack and read prod mode's settings from it.

`deploy` creates or updates the stack from `cloudformation/intent.yaml` and waits for it;
`prod_settings` turns the stack's outputs into the environment `intent_resources.environments`
reads for `prod`. With `endpoint_url` it talks to a non-AWS CloudFormation (the moto server on
loopback, deployed with ``Deployment=local``; docs/production.md says what that leaves out).

    python -m intent_resources.stack env --stack-name intent   # prints `export VAR=value` lines
"""

from __future__ import annotations

import argparse
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

TEMPLATE_PATH = Path(__file__).resolve().parent / "cloudformation" / "intent.yaml"

# Each variable prod mode reads, and the stack output that carries it.
SETTINGS_FROM_OUTPUTS: dict[str, str] = {
    "INTENT_LAKE_URI": "LakeUri",
    "INTENT_ORACLE_URI": "OracleUri",
    "INTENT_FEAST_REGISTRY": "FeastRegistryPath",
    "INTENT_DECISION_LOG_DIR": "DecisionLogUri",
    "INTENT_STREAM_CHECKPOINT_URI": "StreamCheckpointUri",
    "INTENT_MODEL_BUCKET": "ModelBucket",
    "INTENT_MODELS_URI": "ModelArtifactsUri",
    "INTENT_ALERTS_TOPIC_ARN": "AlertsTopicArn",
    "INTENT_KINESIS_STREAM": "KinesisStreamName",
    "INTENT_SAGEMAKER_ROLE_ARN": "SageMakerRoleArn",
    "INTENT_TRAINING_IMAGE": "TrainingImage",
    "INTENT_INFERENCE_IMAGE": "InferenceImage",
    "INTENT_ENDPOINT_NAME": "EndpointName",
    "INTENT_EMR_CLUSTER_ID": "EmrClusterId",
    "REDIS_URL": "RedisUrl",
    "DAGSTER_UI_URL": "DagsterUiUrl",
}

# The IAM resources have no explicit names, so CAPABILITY_IAM suffices (not NAMED_IAM).
CAPABILITIES = ["CAPABILITY_IAM"]
SUCCEEDED = ("CREATE_COMPLETE", "UPDATE_COMPLETE")
NO_UPDATES = "No updates are to be performed"
OPERATION_STARTS = ("CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS", "DELETE_IN_PROGRESS")


class StackError(RuntimeError):
    """The stack could not be deployed or read, or lacks what prod mode needs; says why."""


@dataclass(frozen=True)
class StackDeployment:
    """A stack after `deploy`: its status, what was done and its outputs by key."""

    name: str
    stack_id: str
    status: str
    action: str  # created, updated or unchanged
    outputs: dict[str, str] = field(default_factory=dict)


def template_body(path: Path = TEMPLATE_PATH) -> str:
    return Path(path).read_text(encoding="utf-8")


def cloudformation_client(endpoint_url: Optional[str] = None, region_name: str = "us-east-1"):
    import boto3

    return boto3.client("cloudformation", endpoint_url=endpoint_url, region_name=region_name)


def _message(error: Exception) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Message") or str(error)


def _describe(cf, stack_name: str) -> Optional[dict[str, Any]]:
    from botocore.exceptions import ClientError

    try:
        return cf.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as error:
        if "does not exist" in _message(error):
            return None
        raise


def stack_outputs(description: Mapping[str, Any]) -> dict[str, str]:
    """A described stack's outputs as {OutputKey: OutputValue}."""
    return {o["OutputKey"]: o.get("OutputValue", "") for o in description.get("Outputs") or []}


def _failure_reasons(cf, stack_name: str) -> str:
    """Why resources failed in the stack's latest operation, from its events (newest first)."""
    events = cf.describe_stack_events(StackName=stack_name).get("StackEvents") or []
    reasons = []
    for event in events:
        status = str(event.get("ResourceStatus", ""))
        if status.endswith("FAILED"):
            reasons.append(f"{event['LogicalResourceId']} ({event.get('ResourceType')}): "
                           f"{event.get('ResourceStatusReason') or 'no reason given'}")
        if event.get("ResourceType") == "AWS::CloudFormation::Stack" and status in OPERATION_STARTS:
            break
    return "; ".join(reversed(reasons)) or "no failed resource reported"


def _settle(cf, stack_name: str, poll_s: float, timeout_s: float) -> Optional[dict]:
    """The stack's description once no operation runs on it; None if it is gone."""
    deadline = time.monotonic() + timeout_s
    while (described := _describe(cf, stack_name)) is not None:
        status = described["StackStatus"]
        # REVIEW_IN_PROGRESS is a stack made for a change set nobody executed: nothing will move.
        if not status.endswith("_IN_PROGRESS") or status == "REVIEW_IN_PROGRESS":
            return described
        if time.monotonic() > deadline:
            raise StackError(f"stack {stack_name} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)
    return None


def wait_stack(cf, stack_name: str, poll_s: float = 5.0, timeout_s: float = 3600.0) -> dict:
    """Wait until no operation runs on the stack; its description, or an error if it failed."""
    described = _settle(cf, stack_name, poll_s, timeout_s)
    if described is None:
        raise StackError(f"stack {stack_name} does not exist")
    status = described["StackStatus"]
    if status not in SUCCEEDED:
        raise StackError(f"stack {stack_name} is {status}: {_failure_reasons(cf, stack_name)}")
    return described


def deploy(stack_name: str, parameters: Mapping[str, Any], *, template: Optional[str] = None,
           endpoint_url: Optional[str] = None, region_name: str = "us-east-1",
           poll_s: float = 5.0, timeout_s: float = 3600.0) -> StackDeployment:
    """Create the stack, or update it to this template and these parameters; wait; read outputs.

    `parameters` is the whole set: as with UpdateStack, one left out takes the template's default,
    not the stack's previous value. The template is validated first, so a broken one fails with CloudFormation's
    reason before anything is touched. A stack whose creation failed (ROLLBACK_COMPLETE) cannot be
    updated and is reported as such rather than deleted behind the caller's back.
    """
    from botocore.exceptions import ClientError

    cf = cloudformation_client(endpoint_url, region_name)
    body = template if template is not None else template_body()
    try:
        cf.validate_template(TemplateBody=body)
    except ClientError as error:
        raise StackError(f"the template is not valid: {_message(error)}") from error

    # An operation already running (another deploy, a delete) finishes first.
    current = _settle(cf, stack_name, poll_s, timeout_s)
    try:
        request = {"StackName": stack_name, "TemplateBody": body, "Capabilities": CAPABILITIES,
                   "Parameters": [{"ParameterKey": k, "ParameterValue": str(v)}
                                  for k, v in sorted(parameters.items())]}
        if current is None:
            cf.create_stack(**request, OnFailure="ROLLBACK")
            action = "created"
        elif current["StackStatus"] == "ROLLBACK_COMPLETE":
            raise StackError(f"stack {stack_name} failed to create and cannot be updated; "
                             f"delete it first ({_failure_reasons(cf, stack_name)})")
        else:
            try:
                cf.update_stack(**request)
                action = "updated"
            except ClientError as error:
                if NO_UPDATES not in _message(error):
                    raise
                action = "unchanged"
    except ClientError as error:
        raise StackError(f"stack {stack_name}: {_message(error)}") from error
    described = wait_stack(cf, stack_name, poll_s, timeout_s)
    return StackDeployment(name=stack_name, stack_id=described["StackId"],
                           status=described["StackStatus"], action=action,
                           outputs=stack_outputs(described))


def read_outputs(stack_name: str, endpoint_url: Optional[str] = None,
                 region_name: str = "us-east-1") -> dict[str, str]:
    """The outputs of a deployed stack."""
    described = _describe(cloudformation_client(endpoint_url, region_name), stack_name)
    if described is None:
        raise StackError(f"stack {stack_name} does not exist")
    return stack_outputs(described)


def delete(stack_name: str, *, endpoint_url: Optional[str] = None, region_name: str = "us-east-1",
           poll_s: float = 5.0, timeout_s: float = 3600.0) -> None:
    """Delete the stack and wait until it is gone (the buckets are retained by the template)."""
    cf = cloudformation_client(endpoint_url, region_name)
    if _describe(cf, stack_name) is None:
        return
    cf.delete_stack(StackName=stack_name)
    described = _settle(cf, stack_name, poll_s, timeout_s)
    if described is not None and described["StackStatus"] != "DELETE_COMPLETE":
        raise StackError(f"stack {stack_name} could not be deleted ({described['StackStatus']}): "
                         f"{_failure_reasons(cf, stack_name)}")


def prod_settings(outputs: Mapping[str, str], aws_endpoint_url: Optional[str] = None,
                  region_name: Optional[str] = None) -> dict[str, str]:
    """The environment prod mode reads, from the stack's outputs; an error names what is missing.

    `aws_endpoint_url` (the moto server) becomes ``AWS_ENDPOINT_URL``, which boto3 clients built
    without an explicit endpoint honour; `region_name` becomes ``AWS_DEFAULT_REGION``.
    """
    missing = sorted(key for key in SETTINGS_FROM_OUTPUTS.values() if not outputs.get(key))
    if missing:
        raise StackError(f"the stack's outputs lack {missing}; prod mode needs them "
                         f"(an older template, or Deployment=local without LocalRedisUrl?)")
    settings = {variable: outputs[key] for variable, key in SETTINGS_FROM_OUTPUTS.items()}
    if aws_endpoint_url:
        settings["AWS_ENDPOINT_URL"] = aws_endpoint_url
    if region_name:
        settings["AWS_DEFAULT_REGION"] = region_name
    return settings


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m intent_resources.stack",
                                     description="Read prod mode's settings from the stack.")
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="print `export VAR=value` lines for prod mode")
    env.add_argument("--stack-name", default="intent")
    env.add_argument("--endpoint-url", help="a non-AWS endpoint (the moto server)")
    env.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    try:
        outputs = read_outputs(args.stack_name, args.endpoint_url, args.region)
        settings = prod_settings(outputs, args.endpoint_url, args.region)
    except StackError as error:
        parser.exit(1, f"error: {error}\n")
    for variable, value in settings.items():
        print(f"export {variable}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
