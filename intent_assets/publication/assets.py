"""`published_model`: the gated model, served by the endpoint."""


from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from intent_assets.features.spark_training import (
    build_training_frame,
    read_snapshots,
    training_rows_of,
)
from intent_assets.partitions import daily
from intent_assets.tables import record_row_counts, schema_metadata
from intent_resources.endpoint import ModelEndpointResource
from intent_resources.feast import FeastResource
from intent_resources.spark import SparkResource
from intent_resources.storage import ArtifactStore, LakeSlice, LakeStorage

CALIBRATED_MODEL = AssetKey("calibrated_model")


class PublicationConfig(Config):
    """Which artifact to publish: what the sensor read from the calibrated_model materialization."""

    model_version: str
    tar_path: str
    artifact_dir: str = ""


def publication_metadata(result: dict) -> dict:
    """What the UI shows for a publication: endpoint, version, artifact and what changed."""
    meta = {
        "endpoint_name": result.get("endpoint_name"),
        "model_version": result.get("version"),
        "artifact_uri": result.get("model_data_uri"),
        "target": result.get("target"),
        "status": result.get("status"),
        "action": result.get("action"),
    }
    for key in ("endpoint_url", "endpoint_arn", "endpoint_config_name", "model_name",
                "previous_endpoint_config_name", "previous_version"):
        if result.get(key):
            meta[key] = result[key]
    if meta["artifact_uri"] and not str(meta["artifact_uri"]).startswith("s3://"):
        meta["artifact_uri"] = MetadataValue.path(str(meta["artifact_uri"]))
    return {k: v for k, v in meta.items() if v is not None}


@asset(group_name="publication", deps=[CALIBRATED_MODEL], kinds={"sagemaker", "s3"})
def published_model(context: AssetExecutionContext, config: PublicationConfig,
                    model_endpoint: ModelEndpointResource, models: ArtifactStore) -> MaterializeResult:
    """The model version the endpoint serves, published once its blocking gates passed.

    An S3 artifact and a SageMaker endpoint, or the local container; only a calibrated_model
    whose every blocking check passed gets here."""
    from serving.model import ModelArtifact

    tar = models.local(config.tar_path)  # from S3 in prod: this step may run anywhere
    # the archive must be the version the gates judged, not whatever is at the path now
    found = ModelArtifact.load(tar).version
    if found != config.model_version:
        raise ValueError(f"{tar} holds model {found}, not the gated {config.model_version}")
    result = model_endpoint.publish(str(tar), config.model_version)
    context.log.info(f"model {config.model_version} {result.get('action')} on "
                     f"{result.get('endpoint_name')} ({result.get('target')})")
    return MaterializeResult(metadata=publication_metadata(result))


@asset(**daily("publication"), kinds={"spark", "feast", "parquet"}, pool="spark",
       metadata=schema_metadata("batch_scores"),
       deps=["published_model", "user_features", "product_features"],
       ins={"session_snapshots": AssetIn()})
def batch_scores(context: AssetExecutionContext, spark: SparkResource, session_snapshots: LakeSlice,
                 lake: LakeStorage, feast: FeastResource,
                 model_endpoint: ModelEndpointResource) -> MaterializeResult:
    """A day's scoring moments scored in bulk by the published model: probability, band, action.

    The artifact the endpoint serves, with the same features the online path reads, joined
    point in time by the training table's Spark join; a day's rows are scored in the driver."""
    from serving.batch import score_snapshots
    from serving.model import ModelArtifact

    served = model_endpoint.served_model_path()
    if served is None:
        raise FileNotFoundError("no model is published yet: materialize published_model first")
    artifact = ModelArtifact.load(served)
    feast.apply()
    days = session_snapshots.existing()
    if not days:
        raise FileNotFoundError(f"no session_snapshots for {list(context.partition_keys)}: "
                                "materialize session_snapshots first")
    session = spark.spark_session
    frame = build_training_frame(session, read_snapshots(session, lake, days), feast.store()).cache()
    rows = 0
    per_day: dict[str, int] = {}
    bands: dict[str, int] = {}
    for day in context.partition_keys:
        scored = score_snapshots(artifact, training_rows_of(frame, day).toPandas())
        lake.write(scored, "batch_scores", day)
        rows += len(scored)
        per_day[day] = len(scored)
        for band, n in scored["band"].value_counts().items():
            bands[band] = bands.get(band, 0) + int(n)
    frame.unpersist()
    record_row_counts(context, per_day)
    return MaterializeResult(metadata={
        "rows": rows, "model_version": artifact.version, "days": len(context.partition_keys),
        **{f"band: {k}": v for k, v in sorted(bands.items())},
        "path": MetadataValue.path(lake.uri("batch_scores"))})
