"""The nightly features job and its schedule."""

from dagster import AssetSelection, build_schedule_from_partitioned_job, define_asset_job

from intent_assets.partitions import daily_partitions

# Every daily asset from the clickstream to the features in Redis; unpartitioned assets
# (training set, models) belong to the weekly retrain.
NIGHTLY_FEATURES = ("raw_clickstream", "orders", "sessions", "user_features", "product_features",
                    "session_snapshots", "online_features")

nightly_features_job = define_asset_job(
    "nightly_features_job", selection=AssetSelection.assets(*NIGHTLY_FEATURES),
    partitions_def=daily_partitions,
    description="Yesterday's clickstream to orders, sessions, batch features, snapshots and Redis.")

# Runs for the partition that has just closed (yesterday, UTC).
nightly_features_job_schedule = build_schedule_from_partitioned_job(
    nightly_features_job, hour_of_day=1, minute_of_hour=30, name="nightly_features_job_schedule")
