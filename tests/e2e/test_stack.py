"""The CloudFormation template: cfn-lint clean, deployed to the moto server, its outputs read as prod mode's settings.

moto's CloudFormation creates the buckets, the stream, the topic, the IAM roles and policy, the
SageMaker model / endpoint config / endpoint and the EMR cluster record. It has no ElastiCache and
no CloudWatch alarms, so the stack is deployed with ``Deployment=local``, whose conditions leave
those out and take the Redis standing in for ElastiCache as ``LocalRedisUrl`` (docs/production.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Optional

import boto3
import pandas as pd
import pytest
from dagster import EnvVar, build_resources

from tests.waiting import wait_for as _wait
from intent_resources.storage import LakeStorage
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


# -- the whole stack on one machine: `intent stack up`, prod mode against it, `down` -------------

# The demo's graph on a small simulated slice: the smallest whose model passes the gates (the
# run is deterministic), so the gated model is published. The test is about the topology.
DEMO_DAYS, DEMO_SESSIONS, DEMO_STREAM_EVENTS = "7", "6000", "2000"
# Observed, not materialized: the stream's and the API's own outputs; and the monitoring of the
# scores served, a day's job once the day is over.
NOT_BUILT_BY_THE_DEMO = ["decision_log", "served_scores", "session_features_stream"]


def _intent(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "intent"), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _json(url: str, body: Optional[dict] = None, token: Optional[str] = None):
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"}
                                                 if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except OSError:
        return None, None


@pytest.fixture(scope="module")
def stack_home(tmp_path_factory):
    """`intent stack up` under a fresh INTENT_HOME (its own Postgres database); down afterwards."""
    from intent_resources.stack_up import read_env_file

    home = tmp_path_factory.mktemp("stack_home")
    env = {**os.environ, "INTENT_HOME": str(home)}
    env.pop("REDIS_URL", None)
    database = f"intent_stack_{uuid.uuid4().hex[:8]}"
    up = _intent(["stack", "up", "--database", database], env, timeout=900)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield home, env, read_env_file(home)
    finally:
        _intent(["stack", "down"], env, timeout=300)
        from intent_resources.stack_parts import drop_database, machine_postgres, postgres_answers

        if postgres_answers(machine_postgres(database)):
            drop_database(machine_postgres(database))


@pytest.mark.timeout(2400)  # the stack comes up, then the demo runs its whole graph
def test_prod_demo_runs_the_whole_graph_on_the_stack(stack_home, tmp_path):
    """`intent stack up`, then `INTENT_ENV=prod intent demo`: every asset of the graph built in
    prod mode (Spark on the standalone cluster, runs in Postgres, outputs between steps and the
    Feast registry on S3), the gated model published through SageMaker on moto to the container,
    live events through Kinesis to the job on the cluster, scored through the container, the A/B
    and uplift readouts; then a second publication moves the endpoint (UpdateEndpoint)."""
    from dagster import AssetKey, DagsterInstance
    from dagster._core.storage.dagster_run import RunsFilter
    from dagster_graphql import DagsterGraphQLClient

    from intent_assets.definitions import build_definitions
    from intent_resources.stack_parts import spark_workers_alive
    from intent_resources.stack_processes import load_state
    from intent_resources.streaming import LocalStream, pid_alive, read_pid
    from tests.e2e.test_serving import build_artifact

    home, env, settings = stack_home
    status = _intent(["stack", "status"], env, timeout=120)
    assert status.returncode == 0, status.stdout
    shown = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()}
    parts = {p.name: p for p in load_state(home)["parts"]}
    expected = {"moto", "redis-cluster", "postgres", "spark-master", "spark-worker",
                "inference-container", "sagemaker-hosting", "dagster-code-server",
                "dagster-webserver", "dagster-daemon"}
    expected |= {"redis"} & set(parts)  # only with `--online-store single`
    assert shown == {name: "up" for name in expected}
    assert settings["INTENT_ENV"] == "prod"
    assert settings["REDIS_URL"] == parts["redis-cluster"].address
    assert settings["INTENT_LAKE_URI"] == str(home / "stack" / "lake")
    assert settings["DAGSTER_HOME"] == str(home / "stack" / "dagster_home")

    # -- the demo in prod mode; its settings are the stack's (nothing exported but INTENT_ENV)
    demo = _intent(["demo", "--days", DEMO_DAYS, "--stream-events", DEMO_STREAM_EVENTS,
                    "--challenger-rows", "10000"],
                   {**env, "INTENT_ENV": "prod", "INTENT_SESSIONS_PER_DAY": DEMO_SESSIONS},
                   timeout=1800)
    out = demo.stdout
    assert demo.returncode == 0, out[-4000:] + demo.stderr[-4000:]
    assert f"prod settings of the stack under {home / 'stack'}" in out
    assert "prod deployment; source: simulator" in out
    version = re.search(r"publishing model (\w+) to the SageMaker endpoint (\S+)", out)
    assert version, out[-4000:]
    version = version.group(1)
    container = settings["INTENT_ENDPOINT_URL"]
    assert (_json(f"{container}/ping")[1] or {}).get("model_version") == version
    scored = re.findall(r"POST /score \S+: .* scored_by=(\w+) fallback=(\[[^]]*\])", out)
    assert scored and all(answer == ("endpoint", "[]") for answer in scored), scored
    live = re.search(r"streamed [\d,]+ events of \S+: ([\d,]+) of ([\d,]+) sessions live in Redis; "
                     r"supervisor: (\w+).*keeps running under the supervisor", out)
    assert live and live.group(1) == live.group(2) and live.group(3) == "healthy", out[-4000:]
    # no skew between the online and the offline path where every event had arrived (late
    # events can make the vectors of the sessions they belong to differ, and are counted apart)
    consistency = re.search(r"max mismatch rate by view: (\{.*?\}); with every event "
                            r"arrived: (\{.*?\})", out)
    assert consistency, out[-4000:]
    by_view, all_arrived = (json.loads(group.replace("'", '"')) for group in consistency.groups())
    assert by_view["user_fv"] == 0 and by_view["product_fv"] == 0, by_view
    assert set(all_arrived.values()) == {0}, all_arrived
    assert "ab_readout" in out and "decision=ship" in out

    # -- every asset of the graph materialized, the runs in the stack's Postgres
    with _environ({"DAGSTER_HOME": settings["DAGSTER_HOME"], **settings, "INTENT_SOURCE": "simulator"}):
        defs = build_definitions("prod")
        keys = {key for asset in defs.assets if getattr(asset, "is_executable", True)
                for key in getattr(asset, "keys", None) or [asset.key]}
        with DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            missing = sorted(k.to_user_string() for k in keys
                             if instance.get_latest_materialization_event(k) is None)
            published = instance.get_latest_materialization_event(AssetKey("published_model"))
            publication_config = instance.get_run_by_id(published.run_id).run_config[
                "ops"]["published_model"]["config"]
            stream_runs = instance.get_runs(RunsFilter(job_name="start_streaming_job"))
    assert missing == NOT_BUILT_BY_THE_DEMO, missing
    meta = published.asset_materialization.metadata
    assert (meta["model_version"].value, meta["action"].value) == (version, "created")
    # published by the run the daemon's model_publication_sensor launched
    assert published.run_id in out
    # the stream's run, launched by the daemon, lasts as long as the job, which runs on
    assert [r.status.value for r in stream_runs] == ["STARTED"]
    assert pid_alive(read_pid(LocalStream(home=home, redis_url="", lake="")))

    # Spark's applications ran on the standalone master; Python's I/O went to moto's S3
    ui_port = int(parts["spark-master"].note.rsplit(":", 1)[1])
    assert spark_workers_alive(ui_port) == 1
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
        master = json.load(response)
    assert len(master["completedapps"] + master["activeapps"]) >= 2  # the batch runs, the stream
    s3 = _client("s3", settings["AWS_ENDPOINT_URL"])

    def objects(uri: str) -> list[str]:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get(
            "Contents", [])]

    assert objects(settings["INTENT_FEAST_REGISTRY"])
    assert any("/calibrated_model" in key for key in objects(
        f"s3://{settings['INTENT_MODEL_BUCKET']}/dagster_storage/"))
    assert objects(settings["INTENT_DECISION_LOG_DIR"])
    # model artifacts, baselines and reports in the S3 artifact store; the publication run the
    # daemon launched works on its own copy and had the archive from there
    stored = set(objects(settings["INTENT_MODELS_URI"] + "/"))
    store_prefix = settings["INTENT_MODELS_URI"].removeprefix("s3://").partition("/")[2]
    for key in (f"artifacts/{version}/model.tar.gz", f"artifacts/{version}_test_predictions.parquet",
                f"reports/{version}/report.json", "baselines/logistic_test_predictions.parquet",
                "uplift/current/manifest.json"):
        assert f"{store_prefix}/{key}" in stored, sorted(stored)[:20]
    assert publication_config["tar_path"] == (
        f"{settings['INTENT_MODELS_URI']}/artifacts/{version}/model.tar.gz")
    assert (home / "stack" / "dagster" / "models" / "artifacts" / version / "model.tar.gz").is_file()
    lake = LakeStorage(root=settings["INTENT_LAKE_URI"])
    assert len(lake.read("sessions", ["2026-10-01"])) > 3000

    web = parts["dagster-webserver"].address.rsplit(":", 1)
    client = DagsterGraphQLClient(web[0].removeprefix("http://"), port_number=int(web[1]))
    assert client.get_run_status(stream_runs[0].run_id).value == "STARTED"

    # -- a second publication moves the endpoint to a new model (UpdateEndpoint, blue/green)
    second = build_artifact(tmp_path / "model2", seed=4, trees=10)
    moved = _publish(settings, second)
    assert (moved["action"], moved["status"]) == ("updated", "InService")
    described = _client("sagemaker", settings["AWS_ENDPOINT_URL"]).describe_endpoint(
        EndpointName=moved["endpoint_name"])
    assert described["EndpointConfigName"] == moved["endpoint_config_name"]
    _wait(lambda: (_json(f"{container}/ping")[1] or {}).get("model_version") == second.version,
          "the container to serve the second model", timeout_s=60)


def _publish(settings: dict, artifact) -> dict:
    """Publish through prod mode's own `model_endpoint`, configured by the stack's settings."""
    from intent_resources.environments import resources_for

    with _environ(settings):
        prod = resources_for("prod")
        with build_resources({"model_endpoint": prod["model_endpoint"]}) as built:
            return built.model_endpoint.publish(str(artifact.tarball), artifact.version)


def _heartbeat(settings: dict) -> dict:
    from botocore.exceptions import ClientError

    bucket, _, key = (settings["INTENT_STREAM_CHECKPOINT_URI"] + "-heartbeat.json")[5:].partition("/")
    s3 = _client("s3", settings["AWS_ENDPOINT_URL"])
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError:
        return {}


def _run_messages(settings: dict, run_id: str) -> list[str]:
    """The messages of a run's event log, read from the stack's Postgres."""
    from dagster import DagsterInstance

    with _environ({"DAGSTER_HOME": settings["DAGSTER_HOME"],
                   "DAGSTER_PG_PASSWORD": settings.get("DAGSTER_PG_PASSWORD", "")}):
        with DagsterInstance.get() as instance:
            messages = []
            for entry in instance.all_logs(run_id):
                messages.append(entry.user_message or "")
                event = entry.dagster_event
                if event is not None and event.is_step_failure and event.step_failure_data.error:
                    messages.append(event.step_failure_data.error.message)
            return messages


@contextlib.contextmanager
def _environ(values: dict):
    """`values` in os.environ for the block, the previous environment restored after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _redis_equals(client, expected) -> bool:
    from tests.e2e.test_streaming import assert_redis_equals

    try:
        assert_redis_equals(client, expected)
        return True
    except AssertionError:
        return False


def _started_stream_run(settings: dict) -> Optional[str]:
    """The `start_streaming_job` run that is running, if one is."""
    from dagster import DagsterInstance

    from intent_assets.live_demo import running_streaming_run

    with _environ({"DAGSTER_HOME": settings["DAGSTER_HOME"],
                   "DAGSTER_PG_PASSWORD": settings.get("DAGSTER_PG_PASSWORD", "")}):
        with DagsterInstance.get() as instance:
            return running_streaming_run(instance)


def test_stream_on_the_cluster_from_kinesis_restarted_by_the_supervisor_loses_nothing(stack_home,
                                                                                       monkeypatch):
    """The session job, spark-submitted to the standalone cluster by a Dagster run the daemon
    launched (the demo's, which leaves it running; else one submitted here), fed by the stack's
    Kinesis stream, writing the Redis cluster; killed, restarted by the daemon's supervisor
    sensor from its checkpoint; Redis ends equal to the offline replay of every event."""
    from dagster_graphql import DagsterGraphQLClient

    from intent_resources.stack_processes import load_state
    from intent_resources.streaming import LocalStream, pid_alive, read_pid
    from streaming_jobs.contract import split_duplicates, validate_events
    from streaming_jobs.redis_target import redis_client
    from streaming_jobs.replay import kinesis_client, put_kinesis
    from tests.e2e.test_streaming import expected_rows, simulated

    home, env, settings = stack_home
    moto = settings["AWS_ENDPOINT_URL"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the stack's, for moto
        monkeypatch.setenv(name, settings[name])
    stream = LocalStream(home=home, redis_url="", lake="")
    # ending a minute ago: after anything the job saw before, so none of it is late
    events = simulated(60, seed=41, recent=True)
    first, second = events.iloc[:len(events) // 2], events.iloc[len(events) // 2:]
    kinesis = kinesis_client("us-east-1", moto)
    online = redis_client(settings["REDIS_URL"])
    # the supervisor's alerts, seen through a queue on the stack's topic
    sqs = _client("sqs", moto)
    queue = sqs.create_queue(QueueName=_unique("stream-alerts"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    _client("sns", moto).subscribe(TopicArn=settings["INTENT_ALERTS_TOPIC_ARN"], Protocol="sqs",
                                   Endpoint=queue_arn)

    # -- started by a run the daemon launches: spark-submit to the standalone master
    web = next(p for p in load_state(home)["parts"] if p.name == "dagster-webserver").address
    host, port = web.removeprefix("http://").rsplit(":", 1)
    client = DagsterGraphQLClient(host, port_number=int(port))
    run_id = _started_stream_run(settings)
    if run_id is None:
        run_id = client.submit_job_execution(
            "start_streaming_job", repository_location_name="intent",
            repository_name="__repository__",
            run_config={"ops": {"start_stream": {"config": {"reason": "test_stack"}}}})
    # Pipes waits for the job: the run lasts as long as the job does
    pid = _wait(lambda: pid_alive(p := read_pid(stream)) and p, "the job's spark-submit",
                timeout_s=240)
    assert client.get_run_status(run_id).value == "STARTED"
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert command[command.index(b"--master") + 1].decode() == settings["INTENT_SPARK_MASTER"]
    duplicates_before = _heartbeat(settings).get("quarantine_total", {}).get("duplicate event_id", 0)

    put_kinesis(first, settings["INTENT_KINESIS_STREAM"], kinesis)
    _wait(lambda: _redis_equals(online, expected_rows(first)),
          "the first half of the events in the Redis cluster", timeout_s=240)
    before = _heartbeat(settings)
    assert before["source"] == "kinesis" and before["pid"] != pid  # the driver, under spark-submit
    last_batch = before["sink_batch_id"]
    # its progress reaches the run once the batch's heartbeat is written, after the sink
    _wait(lambda: any(m.startswith("session job running: batch_id")
                      for m in _run_messages(settings, run_id)),
          "the job's progress in the run that launched it", timeout_s=120)

    # -- killed (the whole process group: spark-submit's JVM and the Python driver)
    os.killpg(pid, signal.SIGKILL)
    _wait(lambda: not pid_alive(pid), "the job to die", timeout_s=30)
    put_kinesis(second, settings["INTENT_KINESIS_STREAM"], kinesis)

    # the run that launched it fails with it, and shows what the job told it through Pipes
    _wait(lambda: client.get_run_status(run_id).value == "FAILURE", "the run to fail",
          timeout_s=60)
    told = _run_messages(settings, run_id)
    assert any(m.startswith("session job started: source kinesis") for m in told), told
    assert any(m.startswith("session job running: batch_id") for m in told), told
    assert any("exit code -9" in m for m in told), told

    # -- the daemon's supervisor sensor sees it dead, alerts and restarts it through a run
    restarted = _wait(lambda: (p := read_pid(stream)) != pid and pid_alive(p) and p,
                      "the supervisor to restart the job", timeout_s=300)
    _wait(lambda: _redis_equals(online, expected_rows(events)),
          "every event's session in the Redis cluster", timeout_s=240)
    # the heartbeat follows the sink's write: wait for the restarted job's first batch in it
    after = _wait(lambda: (beat := _heartbeat(settings)).get("sink_batch_id", -1) > last_batch
                  and beat, "the restarted job's heartbeat after its first batch", timeout_s=60)
    # the checkpoint was honoured: batches carry on from the ones committed before the kill
    assert after["checkpoint"] == before["checkpoint"]
    n_dup = len(split_duplicates(validate_events(events).events).quarantine)
    assert after["quarantine_total"].get("duplicate event_id", 0) == duplicates_before + n_dup
    alerts = [json.loads(json.loads(m["Body"])["Message"]) for m in
              sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                  WaitTimeSeconds=1).get("Messages", [])]
    assert any(a.get("status") == "dead" for a in alerts), alerts
    assert restarted != pid


def test_stack_down_leaves_nothing_running(stack_home):
    """`intent stack down` stops every part and the streaming job; their ports are free."""
    from intent_resources.stack_processes import answers, group_members, load_state
    from intent_resources.streaming import LocalStream, read_pid

    home, env, _ = stack_home
    parts = load_state(home)["parts"]
    pids = [pid for part in parts for pid in part.pids]
    stream_pid = read_pid(LocalStream(home=home, redis_url="", lake=""))
    ports = [int(port) for part in parts if part.pids  # not the machine's PostgreSQL
             for port in re.findall(r"127\.0\.0\.1:(\d+)", part.address)]
    assert ports and pids
    down = _intent(["stack", "down"], env, timeout=300)
    assert down.returncode == 0, down.stdout
    assert group_members(pids + ([stream_pid] if stream_pid else [])) == []
    assert [port for port in ports if answers(port)] == []
    assert _intent(["stack", "status"], env, timeout=60).returncode == 3


# -- prod's Python I/O on S3: the stream's heartbeat, its alerts, the decision log ----------------

def test_heartbeat_alerts_and_decision_log_live_in_the_stacks_aws(moto_endpoint, local_stack,
                                                                  monkeypatch):
    import json

    from intent_resources.decision_log import DecisionLogReader
    from intent_resources.streaming import StreamingJobResource
    from streaming_jobs.heartbeat import read_heartbeat, write_json_atomic

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    outputs = local_stack.outputs
    checkpoint = f"s3://{outputs['LakeBucket']}/checkpoints/{_unique('session_features')}"
    heartbeat = f"{checkpoint}-heartbeat.json"
    sqs = _client("sqs", moto_endpoint)
    queue = sqs.create_queue(QueueName=_unique("alerts"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    _client("sns", moto_endpoint).subscribe(TopicArn=outputs["AlertsTopicArn"], Protocol="sqs",
                                            Endpoint=queue_arn)

    stream = StreamingJobResource(mode="emr", checkpoint_uri=checkpoint, heartbeat_path=heartbeat,
                                  alerts_topic_arn=outputs["AlertsTopicArn"])
    assert stream.read_heartbeat() is None, "no heartbeat written yet"
    write_json_atomic(heartbeat, {"status": "running", "batch_id": 4})
    assert stream.read_heartbeat() == read_heartbeat(heartbeat) == {"status": "running",
                                                                   "batch_id": 4}
    stream.alert({"source": "streaming_supervisor_sensor", "status": "stale", "run_key": "k1"})
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                   WaitTimeSeconds=5).get("Messages", [])
    delivered = [json.loads(json.loads(m["Body"])["Message"]) for m in messages]
    assert [(a["subject"], a["run_key"]) for a in delivered] == [("streaming job stale", "k1")]

    s3 = _client("s3", moto_endpoint)
    base = outputs["DecisionLogUri"].removeprefix(f"s3://{outputs['LakeBucket']}/")
    prefix = f"{base}/{_unique('t')}"
    s3.put_object(Bucket=outputs["LakeBucket"], Key=f"{prefix}/date=2026-10-01/a.jsonl",
                  Body=b'{"request_id": "r1"}\n{"request_id": "r2"}\n{"torn')
    s3.put_object(Bucket=outputs["LakeBucket"], Key=f"{prefix}/date=2026-10-01/b.jsonl",
                  Body=b'{"request_id": "r3"}\n')
    reader = DecisionLogReader(directory=f"s3://{outputs['LakeBucket']}/{prefix}")
    assert list(reader.read_day("2026-10-01")["request_id"]) == ["r1", "r2", "r3"]
    assert reader.read_day("2026-10-02").empty

    # the API's own writer: one object per flush under the day's prefix, read back in order
    import datetime as dt

    from serving.decisions import DecisionLog

    written = f"s3://{outputs['LakeBucket']}/{base}/{_unique('api')}"
    log = DecisionLog(written)
    for i in range(3):
        log.append({"request_id": f"w{i}"})
    log.flush()
    log.append({"request_id": "w3"})
    log.close()
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert (log.written, log.lost) == (4, 0)
    assert list(DecisionLogReader(directory=written).read_day(today)["request_id"]) == \
        ["w0", "w1", "w2", "w3"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=outputs["LakeBucket"],
                                                 Prefix=written.split("/", 3)[3])["Contents"]]
    assert len(keys) == 2 and all(f"/date={today}/decisions-" in k and k.endswith(".jsonl")
                                  for k in keys)


def test_the_containers_environment_is_the_images_pip_line(tmp_path):
    from intent_resources.stack_parts import read_image

    image = read_image()
    names = {r.split(">")[0].split("<")[0].split("=")[0] for r in image.requirements}
    # what serving.container imports, as the image installs it
    assert {"numpy", "pandas", "lightgbm", "orjson", "uvicorn", "uvloop", "httptools"} <= names
    assert image.python == "python3.11"
    assert ("serving/", "/opt/program/serving/") in image.copies
    assert dict(image.environment)["PYTHONPATH"] == "/opt/program"

    lacking = tmp_path / "Dockerfile"
    lacking.write_text(Path(TEMPLATE_PATH).parents[2].joinpath("serving", "Dockerfile").read_text()
                       .replace('"orjson>=3.9" ', ""))
    assert not any(r.startswith("orjson") for r in read_image(lacking).requirements)
    lacking.write_text("FROM python:3.11-slim\nCOPY serving/ /opt/program/serving/\n")
    with pytest.raises(RuntimeError, match="no `pip install` line"):
        read_image(lacking)
