"""The CloudFormation template: cfn-lint clean, deployed to the moto server, its outputs read as prod mode's settings.

moto's CloudFormation creates the buckets, the stream, the topic, the IAM roles and policy, the
SageMaker model / endpoint config / endpoint and the EMR cluster record. It has no ElastiCache and
no CloudWatch alarms, so the stack is deployed with ``Deployment=local``, whose conditions leave
those out and take the Redis standing in for ElastiCache as ``LocalRedisUrl`` (docs/production.md).
"""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import boto3
import pandas as pd
import pytest
from dagster import EnvVar, build_resources

from intent_resources.stack import (
    SETTINGS_FROM_OUTPUTS,
    TEMPLATE_PATH,
    StackError,
    delete,
    deploy,
    prod_settings,
    read_outputs,
    template_body,
)

TRAINING_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/intent-train:1"
INFERENCE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/intent-serve:1"
# What moto's CloudFormation creates of the template, and what Deployment=local leaves out.
ON_MOTO = {"LakeBucket", "ModelBucket", "ClickstreamStream", "AlertsTopic", "SageMakerExecutionRole",
           "EmrServiceRole", "EmrInstanceRole", "EmrInstanceProfile", "OrchestratorPolicy",
           "SparkCluster"}
ENDPOINT = {"InitialModel", "InitialEndpointConfig", "Endpoint"}
AWS_ONLY = {"Redis", "RedisSubnetGroup", "RedisSecurityGroup", "EndpointLatencyAlarm",
            "EndpointErrorsAlarm", "StreamLagAlarm"}
LOCAL_REDIS = "redis://127.0.0.1:7000"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _local_parameters(**overrides) -> dict:
    return {"Deployment": "local", "LocalRedisUrl": LOCAL_REDIS, "TrainingImage": TRAINING_IMAGE,
            "InferenceImage": INFERENCE_IMAGE, "EndpointName": _unique("intent"), **overrides}


def _client(service: str, endpoint: str):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def _resources(endpoint: str, stack_name: str) -> dict[str, str]:
    """Logical id -> physical id of what the stack reports."""
    described = _client("cloudformation", endpoint).describe_stack_resources(StackName=stack_name)
    # moto also lists a resource its conditions left out, as an entry with no logical id.
    return {r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in described["StackResources"] if r.get("LogicalResourceId")}


def _env_vars(value) -> set[str]:
    """The environment variables a (nested) resource reads through `EnvVar`."""
    if isinstance(value, EnvVar):
        return {value.env_var_name}
    if hasattr(type(value), "model_fields"):
        return set().union(*(_env_vars(getattr(value, name, None))
                             for name in type(value).model_fields))
    return set()


def _model_tarball(path: Path) -> str:
    with tarfile.open(path, "w:gz") as tar:
        data = b"tree\n"
        info = tarfile.TarInfo("booster.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture(scope="module")
def local_stack(moto_endpoint):
    """One stack deployed to the moto server with the template's defaults (no initial model)."""
    name = _unique("intent")
    return deploy(name, _local_parameters(), endpoint_url=moto_endpoint, poll_s=0.1)


# -- the template -------------------------------------------------------------------------------

def _cfn_lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(path)],
                          capture_output=True, text=True, timeout=300)


def test_template_is_cfn_lint_clean():
    result = _cfn_lint(TEMPLATE_PATH)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_cfn_lint_reports_what_is_broken(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(template_body().replace("ShardCount: !Ref KinesisShardCount",
                                              "ShardCount: !Ref NoSuchShardCount"))
    result = _cfn_lint(broken)
    assert result.returncode != 0
    assert "NoSuchShardCount" in result.stdout


# -- deploying to moto --------------------------------------------------------------------------

def test_local_deployment_creates_what_moto_supports(moto_endpoint, local_stack):
    assert local_stack.action == "created"
    assert local_stack.status == "CREATE_COMPLETE"
    created = _resources(moto_endpoint, local_stack.name)
    assert set(created) == ON_MOTO, "no initial model: no SageMaker model/endpoint, no AWS-only parts"
    outputs = local_stack.outputs

    s3 = _client("s3", moto_endpoint)
    for bucket in (outputs["LakeBucket"], outputs["ModelBucket"]):
        s3.head_bucket(Bucket=bucket)
    assert outputs["LakeUri"] == f"s3://{outputs['LakeBucket']}/lake"
    # moto applies a bucket's encryption and tags; it ignores versioning, lifecycle and the
    # public access block.
    for bucket, role in ((outputs["LakeBucket"], "lake"), (outputs["ModelBucket"], "models")):
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert {"Key": "intent:role", "Value": role} in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]

    stream = _client("kinesis", moto_endpoint).describe_stream_summary(
        StreamName=outputs["KinesisStreamName"])["StreamDescriptionSummary"]
    assert stream["StreamStatus"] == "ACTIVE"
    assert stream["OpenShardCount"] == 2

    topic = _client("sns", moto_endpoint).get_topic_attributes(TopicArn=outputs["AlertsTopicArn"])
    assert topic["Attributes"]["TopicArn"] == outputs["AlertsTopicArn"]

    iam = _client("iam", moto_endpoint)
    role = iam.get_role(RoleName=created["SageMakerExecutionRole"])["Role"]
    assert role["Arn"] == outputs["SageMakerRoleArn"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "sagemaker.amazonaws.com"}
    profile = iam.get_instance_profile(
        InstanceProfileName=created["EmrInstanceProfile"])["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [created["EmrInstanceRole"]]
    iam.get_policy(PolicyArn=outputs["OrchestratorPolicyArn"])

    cluster = _client("emr", moto_endpoint).describe_cluster(
        ClusterId=outputs["EmrClusterId"])["Cluster"]
    assert cluster["ReleaseLabel"] == "emr-7.5.0"
    assert cluster["ServiceRole"] == created["EmrServiceRole"]
    assert cluster["Ec2InstanceAttributes"]["IamInstanceProfile"] == created["EmrInstanceProfile"]

    assert outputs["RedisUrl"] == LOCAL_REDIS
    assert not _client("cloudwatch", moto_endpoint).describe_alarms(
        AlarmNamePrefix=local_stack.name)["MetricAlarms"]


def test_an_initial_model_gives_the_stack_its_endpoint(moto_endpoint):
    model_uri = "s3://models-elsewhere/intent/models/v0/model.tar.gz"
    stack = deploy(_unique("intent"), _local_parameters(InitialModelDataUrl=model_uri,
                                                        InitialModelVersion="v0"),
                   endpoint_url=moto_endpoint, poll_s=0.1)
    created = _resources(moto_endpoint, stack.name)
    assert set(created) == ON_MOTO | ENDPOINT

    sagemaker = _client("sagemaker", moto_endpoint)
    endpoint = sagemaker.describe_endpoint(EndpointName=stack.outputs["EndpointName"])
    assert endpoint["EndpointStatus"] == "InService"
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        "AllTraffic", "ml.m5.large", 1)
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["ExecutionRoleArn"] == stack.outputs["SageMakerRoleArn"]
    assert model["PrimaryContainer"]["Image"] == INFERENCE_IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == model_uri
    assert model["PrimaryContainer"]["Environment"] == {"INTENT_MODEL_VERSION": "v0"}


def test_updating_a_parameter_updates_the_stack_in_place(moto_endpoint):
    name = _unique("intent")
    first_parameters = _local_parameters(KinesisShardCount=1)
    first = deploy(name, first_parameters, endpoint_url=moto_endpoint, poll_s=0.1)
    kinesis = _client("kinesis", moto_endpoint)
    stream = first.outputs["KinesisStreamName"]
    assert kinesis.describe_stream_summary(
        StreamName=stream)["StreamDescriptionSummary"]["OpenShardCount"] == 1

    parameters = {**first_parameters, "KinesisShardCount": 3}
    second = deploy(name, parameters, endpoint_url=moto_endpoint, poll_s=0.1)
    assert (second.action, second.status) == ("updated", "UPDATE_COMPLETE")
    assert second.stack_id == first.stack_id
    assert kinesis.describe_stream_summary(
        StreamName=stream)["StreamDescriptionSummary"]["OpenShardCount"] == 3
    # The update kept the data stores and the settings that were not changed.
    assert second.outputs == first.outputs


def test_deleting_the_stack_keeps_the_buckets(moto_endpoint):
    name = _unique("intent")
    outputs = deploy(name, _local_parameters(), endpoint_url=moto_endpoint, poll_s=0.1).outputs
    delete(name, endpoint_url=moto_endpoint, poll_s=0.1)
    with pytest.raises(StackError, match="does not exist"):
        read_outputs(name, endpoint_url=moto_endpoint)
    streams = _client("kinesis", moto_endpoint).list_streams()["StreamNames"]
    assert outputs["KinesisStreamName"] not in streams
    s3 = _client("s3", moto_endpoint)
    for bucket in (outputs["LakeBucket"], outputs["ModelBucket"]):
        s3.head_bucket(Bucket=bucket)


def test_a_broken_template_is_refused_before_anything_is_created(moto_endpoint):
    name = _unique("intent")
    # A typo in a GetAtt target. (moto wraps ValidateTemplate's finding in "Stack with id ...
    # does not exist"; AWS words it "Template format error: ...".)
    broken = template_body().replace("!GetAtt ClickstreamStream.Arn", "!GetAtt ClickStream.Arn")
    with pytest.raises(StackError, match="template is not valid.*'ClickStream' is not one of"):
        deploy(name, _local_parameters(), template=broken, endpoint_url=moto_endpoint, poll_s=0.1)
    with pytest.raises(StackError, match="does not exist"):
        read_outputs(name, endpoint_url=moto_endpoint)


def test_a_missing_parameter_is_named(moto_endpoint):
    parameters = _local_parameters()
    del parameters["TrainingImage"]
    with pytest.raises(StackError, match="TrainingImage"):
        deploy(_unique("intent"), parameters, endpoint_url=moto_endpoint, poll_s=0.1)


# -- outputs -> prod settings -------------------------------------------------------------------

def test_every_variable_prod_reads_comes_from_the_stack(local_stack):
    from intent_resources.environments import resources_for

    read = set().union(*(_env_vars(r) for r in resources_for("prod").values()))
    settings = prod_settings(local_stack.outputs)
    assert read, "prod resources read nothing through EnvVar: the walk is broken"
    assert read <= set(settings), f"prod reads {sorted(read - set(settings))}, no output gives it"
    assert settings["INTENT_LAKE_URI"] == local_stack.outputs["LakeUri"]
    assert settings["REDIS_URL"] == LOCAL_REDIS


def test_prod_resources_built_from_the_settings_work_against_the_stack(
        moto_endpoint, local_stack, monkeypatch, tmp_path):
    """Prod mode's own resources, configured only by the stack, write the lake, alert and publish."""
    from intent_resources.environments import resources_for

    settings = prod_settings(local_stack.outputs, aws_endpoint_url=moto_endpoint,
                             region_name="us-east-1")
    for variable, value in settings.items():
        monkeypatch.setenv(variable, value)
    prod = resources_for("prod")
    with build_resources({key: prod[key] for key in ("lake", "alerts", "model_endpoint")}) as built:
        lake, alerts, endpoint = built.lake, built.alerts, built.model_endpoint

        assert lake.root == local_stack.outputs["LakeUri"]
        frame = pd.DataFrame({"session_id": ["s1", "s2"], "n": [1, 2]})
        assert lake.write(frame, "sessions", "2024-06-01") == (
            f"{local_stack.outputs['LakeUri']}/sessions/date=2024-06-01")
        pd.testing.assert_frame_equal(lake.read("sessions").drop(columns="date"), frame)

        assert alerts.send("stack check", {"stack": local_stack.name})["sns_message_id"]

        assert endpoint.endpoint_name == local_stack.outputs["EndpointName"]
        sagemaker = endpoint.sagemaker
        uri = sagemaker.upload_artifact(_model_tarball(tmp_path / "model.tar.gz"), "v1")
        assert uri.startswith(f"s3://{local_stack.outputs['ModelBucket']}/")
        published = sagemaker.publish("v1", uri, endpoint.endpoint_name, poll_s=0, timeout_s=5)
    assert (published["action"], published["status"]) == ("created", "InService")
    model = _client("sagemaker", moto_endpoint).describe_model(ModelName=published["model_name"])
    assert model["ExecutionRoleArn"] == local_stack.outputs["SageMakerRoleArn"]
    assert model["PrimaryContainer"]["Image"] == local_stack.outputs["InferenceImage"]


def test_outputs_that_prod_needs_must_be_there(moto_endpoint):
    stack = deploy(_unique("intent"), _local_parameters(LocalRedisUrl=""),
                   endpoint_url=moto_endpoint, poll_s=0.1)
    assert stack.outputs["RedisUrl"] == ""
    with pytest.raises(StackError, match=r"lack \['RedisUrl'\]"):
        prod_settings(stack.outputs)
    assert set(SETTINGS_FROM_OUTPUTS.values()) - {"RedisUrl"} <= set(stack.outputs)


def test_env_command_prints_the_settings_for_a_shell(moto_endpoint, local_stack):
    result = subprocess.run(
        [sys.executable, "-m", "intent_resources.stack", "env", "--stack-name", local_stack.name,
         "--endpoint-url", moto_endpoint],
        capture_output=True, text=True, timeout=120, check=True)
    printed = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1)
                   for line in result.stdout.splitlines())
    expected = prod_settings(local_stack.outputs, moto_endpoint, "us-east-1")
    assert printed == expected
