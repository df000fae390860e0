"""The training table on Spark: snapshots joined point in time by `spark_join`, written in order.

Nothing is collected to the driver: the snapshots are read, joined and written by the executors,
and the metadata are aggregates. The rows and their order equal `feast_ops.build_training_set`
over the snapshots read day by day (tests/assets/test_spark_training.py).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, FloatType

from intent_assets.features.feast_ops import service_views
from intent_assets.features.spark_join import historical_features
from intent_resources.storage import LakeStorage
from streaming_jobs.feature_spec import DEFAULT_SERVICE

_DAY = "__day"
# The snapshot tables' own order (spark_snapshots.day_table), day by day.
_ORDER = (_DAY, "session_id", "event_timestamp", "snapshot_id")
_FEATURE_PREFIXES = ("user_", "product_", "session_")
_NON_FEATURES = frozenset({"user_id", "product_id", "session_id"})


def training_service(store, service: str = DEFAULT_SERVICE):
    """The registered feature service's views that are joined point in time (its batch views,
    with exactly the service's features); the push-fed session view is the snapshot's own."""
    from feast import FeatureService

    return FeatureService(name=f"{service}_joined", features=[
        store.get_feature_view(name)[features]
        for name, features, joined in service_views(store, service) if joined])


def read_snapshots(spark: SparkSession, lake: LakeStorage, days: list[str]) -> DataFrame:
    """The snapshot rows of `days`, each file's own `date` kept, its partition in `__day`.

    The partition directories are read as leaves, so Spark does not put the partition value
    (the session's start day) over the snapshot's own date.
    """
    paths = [lake.spark_uri("session_snapshots", d) for d in days]
    return (spark.read.parquet(*paths)
            .withColumn(_DAY, F.regexp_extract(F.col("_metadata.file_path"), r"date=([^/]+)", 1)))


def build_training_frame(spark: SparkSession, snapshots: DataFrame, store,
                         service: str = DEFAULT_SERVICE) -> DataFrame:
    """Snapshots (from `read_snapshots`) with exactly the feature service's features as of each
    cut, by `feast_ops.build_training_set`'s rules: the batch views joined point in time, the
    session features the snapshot's own (required), any other feature-like column dropped."""
    views = service_views(store, service)
    carried = [f for _, features, joined in views if not joined for f in features]
    lacking = [f for f in carried if f not in snapshots.columns]
    if lacking:
        raise ValueError(f"snapshots lack the session features of service {service!r}: {lacking}")
    served = {f for _, features, _ in views for f in features}
    foreign = [c for c in snapshots.columns
               if c.startswith(_FEATURE_PREFIXES) and c not in _NON_FEATURES and c not in served]
    return historical_features(spark, snapshots.drop(*foreign), training_service(store, service),
                               store)


def write_training_set(frame: DataFrame, lake: LakeStorage) -> None:
    """Replace the `training_set` table with `frame` in the snapshot tables' order (files are
    named in that order). Cache `frame` first: the sort samples it before writing it."""
    (frame.orderBy(*_ORDER).drop(_DAY)
     .write.mode("overwrite").parquet(lake.spark_uri("training_set")))


def training_rows_of(frame: DataFrame, day: str) -> DataFrame:
    """The rows of `frame` whose snapshots are in partition `day`, in the table's order."""
    return frame.where(F.col(_DAY) == day).orderBy(*_ORDER).drop(_DAY)


def training_frame_metadata(frame: DataFrame) -> dict:
    """`feast_ops.training_set_metadata`'s figures, as Spark aggregates: rows, label rates, the
    share of nulls (NaN included) of each feature, sessions and days."""
    features = sorted(c for c in frame.columns
                      if c.startswith(_FEATURE_PREFIXES) and c not in _NON_FEATURES)
    types = {f.name: f.dataType for f in frame.schema.fields}

    def missing(c: str):
        null = F.col(c).isNull()
        if isinstance(types[c], (DoubleType, FloatType)):
            null = null | F.isnan(c)
        return F.avg(null.cast("double")).alias(c)

    row = frame.agg(
        F.count("*").alias("__rows"), F.avg(F.col("label").cast("double")).alias("__label"),
        (F.sum(F.col("label") * F.col("weight")) / F.sum("weight")).alias("__weighted"),
        F.countDistinct("session_id").alias("__sessions"), F.countDistinct("date").alias("__days"),
        *(missing(c) for c in features)).first()
    rows = int(row["__rows"])
    return {
        "rows": rows,
        "label_rate": float(row["__label"]) if rows else None,
        "weighted_label_rate": float(row["__weighted"]) if row["__weighted"] is not None else None,
        "null_rates": {c: float(row[c]) if rows else 0.0 for c in features},
        "sessions": int(row["__sessions"]), "days": int(row["__days"]),
    }
