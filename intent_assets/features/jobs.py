"""The nightly features job: the whole daily chain for a day or a range (backfills, reruns).

Nightly runs are not scheduled: declarative automation (intent_assets/automation.py) requests
each asset's partition when its upstream lands.
"""

from dagster import AssetSelection, define_asset_job

# Every daily asset from the clickstream to the features in Redis; unpartitioned assets
# (training set, models) belong to the weekly retrain.
NIGHTLY_FEATURES = ("raw_clickstream", "orders", "sessions", "user_features", "product_features",
                    "session_snapshots", "online_features")

nightly_features_job = define_asset_job(
    "nightly_features_job", selection=AssetSelection.assets(*NIGHTLY_FEATURES),
    description="A day's clickstream to orders, sessions, batch features, snapshots and Redis.")
