"""The session streaming job on EMR: a step on the deployment's running cluster (`EmrClusterId`),
or a job flow of its own, each through Dagster Pipes (docs/production.md, "The stream on EMR")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from intent_resources.streaming import StreamingJobResource, zip_streaming_jobs


def emr_step(resource: StreamingJobResource, driver_env: Optional[dict[str, str]] = None) -> dict:
    """The job as an EMR step (`spark-submit` in YARN cluster mode through command-runner);
    `driver_env` goes to the driver's environment (the application master's)."""
    missing = [n for n in ("job_script_uri", "checkpoint_uri") if not getattr(resource, n)]
    if missing:
        raise ValueError(f"EMR mode needs {missing}")
    if not (resource.kinesis_stream or resource.landing_uri):
        raise ValueError("EMR mode needs kinesis_stream or landing_uri")
    if not (resource.redis_url and resource.lake):
        raise ValueError("EMR mode needs redis_url and lake (the job's sink)")
    # The driver reads REDIS_URL and INTENT_LAKE from its environment (cluster mode: the
    # application master's). A password inside the URL would be visible in the step's
    # definition: prod's ElastiCache should authenticate by network and IAM instead.
    env = {"REDIS_URL": resource.redis_url, "INTENT_LAKE": resource.lake, **(driver_env or {})}
    args = ["spark-submit", "--deploy-mode", "cluster", "--conf", "spark.yarn.maxAppAttempts=1"]
    for name, value in env.items():
        args += ["--conf", f"spark.yarn.appMasterEnv.{name}={value}"]
    if resource.job_py_files_uri:
        args += ["--py-files", resource.job_py_files_uri]
    args += [resource.job_script_uri, "--checkpoint", resource.checkpoint_uri,
             "--heartbeat", resource.heartbeat_path or "/tmp/intent_stream_heartbeat.json",
             "--state-store", "rocksdb", "--trigger", resource.trigger,
             "--session-timeout", f"{int(resource.session_timeout_min)} minutes"]
    if resource.kinesis_stream:
        args += ["--source", "kinesis", "--kinesis-stream", resource.kinesis_stream]
    else:
        args += ["--source", "files", "--landing", str(resource.landing_uri)]
    return {"Name": "intent-session-features-stream", "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}


def ship_job_code(resource: StreamingJobResource, s3) -> StreamingJobResource:
    """The resource with the job's script and package uploaded next to the checkpoint
    (`<bucket>/code/streaming/<content hash>/`) where no `job_script_uri` names them."""
    import hashlib
    import tempfile

    if resource.job_script_uri:
        return resource
    if not (resource.checkpoint_uri or "").startswith("s3://"):
        raise ValueError("EMR mode needs job_script_uri, or an s3:// checkpoint_uri to "
                         "upload the job's code beside")
    script = Path(__file__).resolve().parents[1] / "streaming_jobs" / "session_job.py"
    with tempfile.TemporaryDirectory() as tmp:
        package = zip_streaming_jobs(Path(tmp) / "streaming_jobs.zip").read_bytes()
    digest = hashlib.sha256(package + script.read_bytes()).hexdigest()[:12]
    bucket = resource.checkpoint_uri[len("s3://"):].split("/", 1)[0]
    prefix = f"code/streaming/{digest}"
    s3.put_object(Bucket=bucket, Key=f"{prefix}/session_job.py", Body=script.read_bytes())
    s3.put_object(Bucket=bucket, Key=f"{prefix}/streaming_jobs.zip", Body=package)
    return resource.model_copy(update={
        "job_script_uri": f"s3://{bucket}/{prefix}/session_job.py",
        "job_py_files_uri": f"s3://{bucket}/{prefix}/streaming_jobs.zip"})


def run_as_emr_step(resource: StreamingJobResource, context) -> str:
    """Add the job as a step to the running EMR cluster `emr_cluster_id` (the stack's
    `EmrClusterId`) inside a Dagster Pipes session and wait for it: the run lasts as long as
    the step, which reports to it through Pipes (messages in S3). Raises when the step ends
    otherwise than COMPLETED, or the cluster ends under it, so the run fails and the
    supervisor sees a dead job; a terminated run cancels the step. Returns the step id."""
    import boto3
    from botocore.exceptions import ClientError
    from dagster import (
        DagsterExecutionInterruptedError,
        Failure,
        PipesEnvContextInjector,
        open_pipes_session,
    )
    from dagster_aws.pipes import PipesS3MessageReader

    s3 = boto3.client("s3", endpoint_url=resource.kinesis_endpoint)
    emr = boto3.client("emr", endpoint_url=resource.kinesis_endpoint)
    shipped = ship_job_code(resource, s3)
    bucket = resource.emr_pipes_bucket or shipped.checkpoint_uri[len("s3://"):].split("/", 1)[0]
    with open_pipes_session(context=context, context_injector=PipesEnvContextInjector(),
                            message_reader=PipesS3MessageReader(bucket=bucket, client=s3,
                                                                interval=resource.emr_poll_s),
                            extras={"checkpoint": shipped.checkpoint_uri,
                                    "heartbeat": shipped.heartbeat_location()}) as session:
        step = emr_step(shipped, session.get_bootstrap_env_vars())
        (step_id,) = emr.add_job_flow_steps(JobFlowId=resource.emr_cluster_id,
                                            Steps=[step])["StepIds"]
        context.log.info(f"EMR step {step_id} on cluster {resource.emr_cluster_id}: "
                         f"{shipped.job_script_uri}")
        try:
            state, reason = _wait_for_step(resource, emr, step_id)
        except DagsterExecutionInterruptedError:
            try:  # the run was terminated: so is the job
                emr.cancel_steps(ClusterId=resource.emr_cluster_id, StepIds=[step_id])
            except ClientError as error:
                context.log.error(f"could not cancel EMR step {step_id}: {error}")
            raise
    if state != "COMPLETED":
        raise Failure(f"the streaming job's EMR step {step_id} ended {state}: {reason}")
    return step_id


def _wait_for_step(resource: StreamingJobResource, emr, step_id: str) -> tuple[str, str]:
    """The step's final state and why, polling every `emr_poll_s`; a cluster that ends
    while the step runs ends the step with it."""
    while True:
        status = emr.describe_step(ClusterId=resource.emr_cluster_id,
                                   StepId=step_id)["Step"]["Status"]
        if status["State"] in ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED"):
            return status["State"], (status.get("FailureDetails") or {}).get("Reason", "")
        cluster = emr.describe_cluster(ClusterId=resource.emr_cluster_id)["Cluster"]["Status"]
        if cluster["State"] in ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"):
            change = cluster.get("StateChangeReason") or {}
            return "INTERRUPTED", (f"the cluster is {cluster['State']}"
                                   + (f" ({change['Message']})" if change.get("Message") else ""))
        time.sleep(resource.emr_poll_s)


def emr_job_flow_params(resource: StreamingJobResource) -> dict:
    """RunJobFlow parameters: a cluster of its own that runs the job as its one step
    (where no `emr_cluster_id` names a running cluster)."""
    if not resource.emr_log_uri:
        raise ValueError("EMR mode needs ['emr_log_uri']")
    # the cluster ends with its one step
    step = {**emr_step(resource), "Name": "session_job", "ActionOnFailure": "TERMINATE_CLUSTER"}
    return {
        "Name": "intent-session-features-stream",
        "ReleaseLabel": resource.emr_release_label,
        "LogUri": resource.emr_log_uri,
        "Applications": [{"Name": "Spark"}],
        "Instances": {
            "InstanceGroups": [
                {"Name": "primary", "InstanceRole": "MASTER",
                 "InstanceType": resource.emr_instance_type, "InstanceCount": 1},
                {"Name": "core", "InstanceRole": "CORE",
                 "InstanceType": resource.emr_instance_type,
                 "InstanceCount": max(1, resource.emr_instance_count - 1)},
            ],
            "KeepJobFlowAliveWhenNoSteps": False,
        },
        "Steps": [step],
        "ServiceRole": resource.emr_service_role,
        "JobFlowRole": resource.emr_job_flow_role,
    }


def pipes_emr_client(resource: StreamingJobResource):
    """Dagster Pipes' EMR client; the job's messages come back through an S3 bucket."""
    import boto3
    from dagster_aws.pipes import PipesEMRClient, PipesS3MessageReader

    if not resource.emr_pipes_bucket:
        raise ValueError("EMR mode needs emr_pipes_bucket for Pipes messages")
    return PipesEMRClient(
        message_reader=PipesS3MessageReader(bucket=resource.emr_pipes_bucket,
                                            client=boto3.client("s3")),
        client=boto3.client("emr"))
