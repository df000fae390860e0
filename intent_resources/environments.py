"""The one switch between environments: which resources a deployment gets.

Called while Definitions are built, never at import time. `local` is the embedded default
(lake and Dagster state under `.intent/`, the project's own Redis, Spark local[*]); `prod` reads
its settings from the environment (the CloudFormation stack's outputs: S3 lake, ElastiCache, EMR, SNS).
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import EnvVar, FilesystemIOManager

from intent_resources.alerts import AlertsResource
from intent_resources.clickstream import ClickstreamSource
from intent_resources.decision_log import DecisionLogReader
from intent_resources.endpoint import ModelEndpointResource
from intent_resources.feast import FeastResource
from intent_resources.project_config import ProjectConfig, load_project_config
from intent_resources.redis import RedisResource
from intent_resources.sagemaker_endpoint import SageMakerEndpointResource
from intent_resources.sagemaker_tuning import SageMakerTuningResource
from intent_resources.spark import LOCAL_SPARK_CONFIG, SparkResource
from intent_resources.storage import ArtifactStore, LakeStorage
from intent_resources.streaming import StreamingJobResource, metrics_dir
from serving.project import intent_home
from serving.project import redis_url as project_redis_url


def feature_repo_path() -> str:
    import feature_repo

    return str(Path(feature_repo.__file__).resolve().parent)


def resources_for(env: str, config: ProjectConfig | None = None) -> dict:
    """The resources of an environment, by resource key, for the project configuration."""
    config = config or load_project_config()
    if env == "local":
        home = intent_home()
        redis_url = project_redis_url(home)
        return {
            "lake": LakeStorage(root=str(home / "lake")),
            # The simulator's ground truth: outside the lake, so nothing that trains reads it.
            "oracle": LakeStorage(root=str(home / "oracle")),
            "spark": SparkResource(spark_config=LOCAL_SPARK_CONFIG),
            "redis": RedisResource(url=redis_url),
            "feast": FeastResource(repo_path=feature_repo_path(), env="local", redis_url=redis_url,
                                   lake_root=str(home / "lake"), home=str(home)),
            "models": ArtifactStore(root=str(home / "models")),
            "model_endpoint": ModelEndpointResource(target="local", home=str(home)),
            "streaming": StreamingJobResource(mode="local", home=str(home), redis_url=redis_url,
                                              session_timeout_min=config.session_timeout_min),
            "alerts": AlertsResource(jsonl_path=str(home / "alerts.jsonl"),
                                     metrics_path=str(metrics_dir(home) / "alerts.prom")),
            "decision_log": DecisionLogReader(
                directory=os.environ.get("INTENT_DECISION_LOG_DIR") or str(home / "decisions")),
            "model_io_manager": FilesystemIOManager(base_dir=str(home / "dagster_storage")),
            "clickstream": ClickstreamSource.from_config(config),
            # local tunes in process; these settings let `backend: sagemaker` reach an account
            "sagemaker_tuning": SageMakerTuningResource(
                role_arn=os.environ.get("INTENT_SAGEMAKER_ROLE_ARN", ""),
                bucket=os.environ.get("INTENT_MODEL_BUCKET", ""),
                training_image=os.environ.get("INTENT_TRAINING_IMAGE", "")),
        }
    if env == "prod":
        return _prod_resources(config)
    raise ValueError(f"unknown environment {env!r}: expected 'local' or 'prod'")


def _prod_resources(config: ProjectConfig) -> dict:
    """Prod reads the CloudFormation stack's outputs (`intent_resources.stack.prod_settings`)
    from the environment; boto3 clients follow AWS_ENDPOINT_URL (the stack's moto server)."""
    from dagster_aws.s3 import S3PickleIOManager, S3Resource

    home = os.environ.get("INTENT_HOME", "/tmp/intent")
    s3_endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    alerts = AlertsResource(topic_arn=EnvVar("INTENT_ALERTS_TOPIC_ARN"),
                            ui_base_url=EnvVar("DAGSTER_UI_URL"))
    checkpoint = os.environ.get("INTENT_STREAM_CHECKPOINT_URI")
    spark_config = {k: v for k, v in LOCAL_SPARK_CONFIG.items() if k != "spark.master"}
    if os.environ.get("INTENT_SPARK_MASTER"):  # a standalone cluster; on EMR the cluster says
        spark_config["spark.master"] = os.environ["INTENT_SPARK_MASTER"]
    if os.environ.get("INTENT_SPARK_CORES_MAX"):  # what a batch application may hold of it
        spark_config["spark.cores.max"] = os.environ["INTENT_SPARK_CORES_MAX"]
    standalone = spark_config.get("spark.master", "").startswith("spark://")
    return {
        # the endpoint is configuration, not only the driver's AWS_ENDPOINT_URL: Spark tasks on
        # the cluster's workers rebuild the storage from its fields (ingest writes from there)
        "lake": LakeStorage(root=EnvVar("INTENT_LAKE_URI"), endpoint_url=s3_endpoint),
        # The simulator's ground truth: only a simulated deployment has one.
        "oracle": LakeStorage(root=os.environ.get("INTENT_ORACLE_URI", ""),
                              endpoint_url=s3_endpoint),
        "spark": SparkResource(spark_config=spark_config),
        "redis": RedisResource(url=EnvVar("REDIS_URL")),
        "feast": FeastResource(repo_path=feature_repo_path(), env="prod",
                               redis_url=EnvVar("REDIS_URL"), lake_root=EnvVar("INTENT_LAKE_URI"),
                               home=home, registry_path=EnvVar("INTENT_FEAST_REGISTRY"),
                               s3_endpoint_url=s3_endpoint),
        # on S3; each process works on its own copy (INTENT_MODELS_DIR)
        "models": ArtifactStore(root=os.environ.get("INTENT_MODELS_DIR", f"{home}/models"),
                                uri=EnvVar("INTENT_MODELS_URI"), endpoint_url=s3_endpoint),
        "model_endpoint": ModelEndpointResource(
            target="sagemaker", endpoint_name=os.environ.get("INTENT_ENDPOINT_NAME", "intent"),
            home=home, poll_s=float(os.environ.get("INTENT_ENDPOINT_POLL_S", 15)),
            sagemaker=SageMakerEndpointResource(
                role_arn=EnvVar("INTENT_SAGEMAKER_ROLE_ARN"),
                inference_image=EnvVar("INTENT_INFERENCE_IMAGE"),
                bucket=EnvVar("INTENT_MODEL_BUCKET"))),
        # AMT trials run the training image on the model bucket's channels
        "sagemaker_tuning": SageMakerTuningResource(
            role_arn=EnvVar("INTENT_SAGEMAKER_ROLE_ARN"), bucket=EnvVar("INTENT_MODEL_BUCKET"),
            training_image=EnvVar("INTENT_TRAINING_IMAGE"),
            poll_s=float(os.environ.get("INTENT_TUNING_POLL_S", 30))),
        # Outputs between steps (model dicts, baselines) in the model bucket, whichever
        # machine runs the next step.
        "model_io_manager": S3PickleIOManager(
            s3_resource=S3Resource(endpoint_url=s3_endpoint),
            s3_bucket=EnvVar("INTENT_MODEL_BUCKET"), s3_prefix="dagster_storage"),
        "streaming": StreamingJobResource(
            # spark-submit to a standalone cluster (`intent stack up`), else a step on EMR
            mode="standalone" if standalone else "emr", home=home,
            spark_master=spark_config.get("spark.master") if standalone else None,
            kinesis_endpoint=s3_endpoint,
            redis_url=EnvVar("REDIS_URL"), lake=EnvVar("INTENT_LAKE_URI"),
            checkpoint_uri=checkpoint, kinesis_stream=os.environ.get("INTENT_KINESIS_STREAM"),
            emr_cluster_id=os.environ.get("INTENT_EMR_CLUSTER_ID"),
            session_timeout_min=config.session_timeout_min,
            # beside the checkpoint: readable wherever the job's driver runs
            heartbeat_path=f"{checkpoint.rstrip('/')}-heartbeat.json" if checkpoint else None,
            alerts_topic_arn=EnvVar("INTENT_ALERTS_TOPIC_ARN"), ui_base_url=EnvVar("DAGSTER_UI_URL")),
        "alerts": alerts,
        "decision_log": DecisionLogReader(directory=EnvVar("INTENT_DECISION_LOG_DIR")),
        "clickstream": _prod_clickstream(config),
    }


def _prod_clickstream(config: ProjectConfig) -> ClickstreamSource:
    """Prod reads Firehose's landing table, unless the simulator is asked for by name
    (INTENT_SOURCE=simulator, or config.json): a simulated slice on the prod stack."""
    if config.is_simulator and config.origin.get("source", "default") != "default":
        return ClickstreamSource.from_config(config)
    return ClickstreamSource.from_config(
        config, landing_table=os.environ.get("INTENT_LANDING_TABLE", "landing_firehose"))
