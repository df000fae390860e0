"""The one switch between environments: which resources a deployment gets.

Called while Definitions are built, never at import time. `local` is the embedded default
(lake and Dagster state under `.intent/`, the project's own Redis, Spark local[*]); `prod` reads
its settings from the environment (S3 lake, ElastiCache, EMR).
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
from intent_resources.spark import LOCAL_SPARK_CONFIG, SparkResource
from intent_resources.storage import ArtifactStore, LakeStorage
from intent_resources.streaming import StreamingJobResource
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
            "alerts": AlertsResource(jsonl_path=str(home / "alerts.jsonl")),
            "decision_log": DecisionLogReader(
                directory=os.environ.get("INTENT_DECISION_LOG_DIR") or str(home / "decisions")),
            "model_io_manager": FilesystemIOManager(base_dir=str(home / "dagster_storage")),
            "clickstream": ClickstreamSource.from_config(config),
        }
    if env == "prod":
        return {
            "lake": LakeStorage(root=EnvVar("INTENT_LAKE_URI")),
            "oracle": LakeStorage(root=EnvVar("INTENT_ORACLE_URI")),
            # On EMR the cluster supplies master and S3 settings; the rest is the same.
            "spark": SparkResource(spark_config={k: v for k, v in LOCAL_SPARK_CONFIG.items()
                                                 if k != "spark.master"}),
            "redis": RedisResource(url=EnvVar("REDIS_URL")),
            "feast": FeastResource(repo_path=feature_repo_path(), env="prod",
                                   redis_url=EnvVar("REDIS_URL"), lake_root=EnvVar("INTENT_LAKE_URI"),
                                   home=os.environ.get("INTENT_HOME", "/tmp/intent"),
                                   registry_path=EnvVar("INTENT_FEAST_REGISTRY")),
            "models": ArtifactStore(root=os.environ.get("INTENT_MODELS_DIR", "/tmp/intent/models")),
            "model_endpoint": ModelEndpointResource(
                target="sagemaker", endpoint_name=os.environ.get("INTENT_ENDPOINT_NAME", "intent"),
                sagemaker=SageMakerEndpointResource(
                    role_arn=EnvVar("INTENT_SAGEMAKER_ROLE_ARN"),
                    inference_image=EnvVar("INTENT_INFERENCE_IMAGE"),
                    bucket=EnvVar("INTENT_MODEL_BUCKET"))),
            "model_io_manager": FilesystemIOManager(
                base_dir=os.environ.get("INTENT_DAGSTER_STORAGE", "/tmp/intent/dagster_storage")),
            # EMR settings (bucket, script, checkpoint) come with the EMR deployment; see
            # intent_resources/streaming.py.
            "streaming": StreamingJobResource(mode="emr", redis_url=EnvVar("REDIS_URL"),
                                              lake=EnvVar("INTENT_LAKE_URI"),
                                              session_timeout_min=config.session_timeout_min),
            "alerts": AlertsResource(topic_arn=EnvVar("INTENT_ALERTS_TOPIC_ARN"),
                                     ui_base_url=EnvVar("DAGSTER_UI_URL")),
            "decision_log": DecisionLogReader(directory=EnvVar("INTENT_DECISION_LOG_DIR")),
            "clickstream": ClickstreamSource.from_config(
                config, landing_table=os.environ.get("INTENT_LANDING_TABLE", "landing_firehose")),
        }
    raise ValueError(f"unknown environment {env!r}: expected 'local' or 'prod'")
