"""Feast's point-in-time join, run by Spark: `historical_features(spark, entity_df, service, store)`.

Feast stays the definition: the views, their features, join keys, TTLs, sources and timestamp
columns all come from the FeatureService and the registry. For each entity row and view, the
joined row is the view's newest source row with the same join keys stamped at or before the
row's `event_timestamp` and no older than the view's TTL; among rows stamped alike, the newest
`created_timestamp` wins. A row without one gets nulls, as `feast_ops.build_training_set` (Feast's
file store with its guards) returns; tests/assets/test_spark_join.py holds the two equal.

It buys the join spread over executors instead of one pandas process:
`benchmarks/batch_features.py` measures both (docs/benchmarks.md).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

ENTITY_TIMESTAMP = "event_timestamp"
_CUT, _STAMP, _CREATED, _RANK = "__cut_us", "__stamp_us", "__created_us", "__rank"


def _source_rows(spark: SparkSession, view, join_keys: list[str], entity_keys: list[str],
                 features: list[str]) -> DataFrame | None:
    """A view's source rows: entity-named keys, stamp and created time in µs, features."""
    source = view.batch_source
    path = getattr(source, "path", None)
    if path is None:
        raise ValueError(f"{view.name}: only file sources are read here, not {type(source).__name__}")
    try:
        rows = spark.read.parquet(path)
    except Exception as exc:  # noqa: BLE001 - Spark's own error for a path with no parquet
        if "PATH_NOT_FOUND" in str(exc) or "UNABLE_TO_INFER_SCHEMA" in str(exc):
            return None
        raise
    created = source.created_timestamp_column
    return rows.select(
        *(F.col(k).alias(e) for k, e in zip(join_keys, entity_keys)),
        F.unix_micros(F.col(source.timestamp_field).cast("timestamp")).alias(_STAMP),
        (F.unix_micros(F.col(created).cast("timestamp")) if created
         else F.lit(None).cast("bigint")).alias(_CREATED),
        *features)


def _view_features(spark: SparkSession, entity_df: DataFrame, projection, view) -> DataFrame:
    """One view's features for each distinct (entity keys, cut): keys, _CUT, features."""
    join_keys = list(view.join_keys)
    entity_keys = [projection.join_key_map.get(k, k) for k in join_keys]
    features = [f.name for f in projection.features]
    names = [f.name for f in projection.features]  # full_feature_names=False, as training asks
    pairs = entity_df.select(*entity_keys, _CUT).distinct()
    rows = _source_rows(spark, view, join_keys, entity_keys, features)
    if rows is None:
        return pairs.select(*entity_keys, _CUT, *(F.lit(None).alias(n) for n in names))
    ttl_us = int(view.ttl.total_seconds() * 1_000_000) if view.ttl else 0
    on = [pairs[k] == rows[k] for k in entity_keys] + [rows[_STAMP] <= pairs[_CUT]]
    if ttl_us:  # a TTL of 0 means none, as in Feast
        on.append(rows[_STAMP] >= pairs[_CUT] - F.lit(ttl_us))
    matched = pairs.join(rows, on, "inner").select(
        *(pairs[k] for k in entity_keys), pairs[_CUT], rows[_STAMP], rows[_CREATED],
        *(rows[f] for f in features))
    newest = Window.partitionBy(*entity_keys, _CUT).orderBy(
        F.col(_STAMP).desc(), F.col(_CREATED).desc_nulls_last())
    return (matched.withColumn(_RANK, F.row_number().over(newest)).where(F.col(_RANK) == 1)
            .select(*entity_keys, _CUT, *(F.col(f).alias(n) for f, n in zip(features, names))))


def historical_features(spark: SparkSession, entity_df: DataFrame, feature_service,
                        store) -> DataFrame:
    """`entity_df` with the FeatureService's features joined point in time, by Spark.

    `entity_df` holds each view's join keys and `event_timestamp`; every row comes back once,
    with its own columns unchanged and the service's features after them (view by view, in the
    service's order). `store` is the `feast.FeatureStore` whose registry defines the views.
    """
    if ENTITY_TIMESTAMP not in entity_df.columns:
        raise ValueError(f"entity_df lacks {ENTITY_TIMESTAMP!r}")
    out = entity_df.withColumn(_CUT, F.unix_micros(F.col(ENTITY_TIMESTAMP).cast("timestamp")))
    for projection in feature_service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        missing = [projection.join_key_map.get(k, k) for k in view.join_keys
                   if projection.join_key_map.get(k, k) not in entity_df.columns]
        if missing:
            raise ValueError(f"entity_df lacks {view.name}'s join keys {missing}")
        clash = sorted({f.name for f in projection.features} & set(out.columns))
        if clash:
            raise ValueError(f"entity_df already holds {view.name}'s feature columns {clash}")
        joined = _view_features(spark, out, projection, view)
        keys = [projection.join_key_map.get(k, k) for k in view.join_keys]
        names = [f.name for f in projection.features]
        out = out.join(joined, [*keys, _CUT], "left").select(*out.columns, *names)
    return out.drop(_CUT)
