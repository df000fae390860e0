"""Where and how the streaming job runs: a local background process, or a step on EMR via Pipes.

`StreamingJobResource()` with no arguments is the local default: everything is resolved when
used (INTENT_HOME, the project's Redis), never at import. Prod sets `mode="emr"` and the EMR
settings (from the environment through `EnvVar`).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Literal, Optional

from dagster import ConfigurableResource

from intent_assets.streaming.health import Thresholds
from intent_assets.streaming.process import LocalStream, pid_alive, read_pid


class StreamingJobResource(ConfigurableResource):
    """The session streaming job's home, thresholds and where it runs."""

    mode: Literal["local", "emr"] = "local"
    home: Optional[str] = None            # default: INTENT_HOME (or .intent)
    redis_url: Optional[str] = None       # default: the project's Redis
    lake: Optional[str] = None            # default: $INTENT_HOME/lake
    heartbeat_path: Optional[str] = None  # default: $INTENT_HOME/stream/heartbeat.json
    alerts_path: Optional[str] = None     # default: $INTENT_HOME/alerts.jsonl
    trigger: str = "1 second"
    stale_after_s: float = 120.0
    startup_grace_s: float = 300.0
    # -- EMR (mode="emr") ------------------------------------------------------------------------
    emr_release_label: str = "emr-7.5.0"
    emr_instance_type: str = "m6g.xlarge"
    emr_instance_count: int = 3
    emr_log_uri: Optional[str] = None
    emr_service_role: str = "EMR_DefaultRole"
    emr_job_flow_role: str = "EMR_EC2_DefaultRole"
    emr_pipes_bucket: Optional[str] = None
    job_script_uri: Optional[str] = None   # s3://.../session_job.py
    job_py_files_uri: Optional[str] = None  # s3://.../streaming_jobs.zip
    checkpoint_uri: Optional[str] = None    # s3://.../checkpoints/session_features
    kinesis_stream: Optional[str] = None
    landing_uri: Optional[str] = None       # s3a://... (Firehose output), when not Kinesis

    def resolved_home(self) -> Path:
        from serving.project import intent_home

        return Path(self.home).resolve() if self.home else intent_home()

    def local_stream(self) -> LocalStream:
        from serving.project import redis_url

        home = self.resolved_home()
        return LocalStream(home=home, redis_url=self.redis_url or redis_url(home),
                           lake=self.lake or str(home / "lake"), trigger=self.trigger)

    def heartbeat_file(self) -> Path:
        if self.heartbeat_path:
            return Path(self.heartbeat_path)
        return self.local_stream().heartbeat

    def alerts_file(self) -> Path:
        return Path(self.alerts_path) if self.alerts_path else self.resolved_home() / "alerts.jsonl"

    def thresholds(self) -> Thresholds:
        return Thresholds(stale_after_s=self.stale_after_s, startup_grace_s=self.startup_grace_s)

    def read_heartbeat(self) -> Optional[dict]:
        from streaming_jobs.heartbeat import read_heartbeat

        return read_heartbeat(self.heartbeat_file())

    def pid_alive(self) -> Optional[bool]:
        """Whether the local job's process runs; None on EMR, where there is none to look at."""
        if self.mode != "local":
            return None
        return pid_alive(read_pid(self.local_stream()))

    def alert(self, payload: dict) -> None:
        """Append an alert as one JSON line (SNS comes later)."""
        path = self.alerts_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        line = {"time": dt.datetime.now(dt.timezone.utc).isoformat(), **payload}
        with open(path, "a") as fh:
            fh.write(json.dumps(line, default=str) + "\n")

    # -- EMR ---------------------------------------------------------------------------------------
    def emr_job_flow_params(self) -> dict:
        """RunJobFlow parameters: a cluster that runs the job as its one step."""
        missing = [n for n in ("job_script_uri", "checkpoint_uri", "emr_log_uri")
                   if not getattr(self, n)]
        if missing:
            raise ValueError(f"EMR mode needs {missing}")
        if not (self.kinesis_stream or self.landing_uri):
            raise ValueError("EMR mode needs kinesis_stream or landing_uri")
        if not (self.redis_url and self.lake):
            raise ValueError("EMR mode needs redis_url and lake (the job's sink)")
        # The driver reads REDIS_URL and INTENT_LAKE from its environment (cluster mode: the
        # application master's). A password inside the URL would be visible in the step's
        # definition: prod's ElastiCache should authenticate by network and IAM instead.
        args = ["spark-submit", "--deploy-mode", "cluster",
                "--conf", "spark.yarn.maxAppAttempts=1",
                "--conf", f"spark.yarn.appMasterEnv.REDIS_URL={self.redis_url}",
                "--conf", f"spark.yarn.appMasterEnv.INTENT_LAKE={self.lake}"]
        if self.job_py_files_uri:
            args += ["--py-files", self.job_py_files_uri]
        args += [self.job_script_uri, "--checkpoint", self.checkpoint_uri,
                 "--heartbeat", "/tmp/intent_stream_heartbeat.json",
                 "--state-store", "rocksdb", "--trigger", self.trigger]
        if self.kinesis_stream:
            args += ["--source", "kinesis", "--kinesis-stream", self.kinesis_stream]
        else:
            args += ["--source", "files", "--landing", str(self.landing_uri)]
        return {
            "Name": "intent-session-features-stream",
            "ReleaseLabel": self.emr_release_label,
            "LogUri": self.emr_log_uri,
            "Applications": [{"Name": "Spark"}],
            "Instances": {
                "InstanceGroups": [
                    {"Name": "primary", "InstanceRole": "MASTER",
                     "InstanceType": self.emr_instance_type, "InstanceCount": 1},
                    {"Name": "core", "InstanceRole": "CORE",
                     "InstanceType": self.emr_instance_type,
                     "InstanceCount": max(1, self.emr_instance_count - 1)},
                ],
                "KeepJobFlowAliveWhenNoSteps": False,
            },
            "Steps": [{"Name": "session_job", "ActionOnFailure": "TERMINATE_CLUSTER",
                       "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}],
            "ServiceRole": self.emr_service_role,
            "JobFlowRole": self.emr_job_flow_role,
        }

    def pipes_emr_client(self):
        """Dagster Pipes' EMR client; the job's messages come back through an S3 bucket."""
        import boto3
        from dagster_aws.pipes import PipesEMRClient, PipesS3MessageReader

        if not self.emr_pipes_bucket:
            raise ValueError("EMR mode needs emr_pipes_bucket for Pipes messages")
        return PipesEMRClient(
            message_reader=PipesS3MessageReader(bucket=self.emr_pipes_bucket,
                                                client=boto3.client("s3")),
            client=boto3.client("emr"))
