"""Freshness policies: how stale the feature and model assets may get before they show as late."""

import datetime as dt

from dagster import AssetSelection, Definitions, FreshnessPolicy, apply_freshness_policy

# Features are rebuilt nightly: a day and a few hours of slack before it is an incident.
FEATURES_FRESHNESS = FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=30),
                                                 warn_window=dt.timedelta(hours=26))
# The model retrains weekly.
MODEL_FRESHNESS = FreshnessPolicy.time_window(fail_window=dt.timedelta(days=9),
                                              warn_window=dt.timedelta(days=8))
FEATURE_ASSETS = ("user_features", "product_features", "session_snapshots", "online_features",
                  "training_set")
MODEL_ASSETS = ("tuned_model", "calibrated_model", "published_model")


def with_freshness_policies(defs: Definitions) -> Definitions:
    """The same definitions with the feature and model freshness policies applied."""
    keys = {a.key.to_user_string() for a in defs.resolve_all_asset_specs()}
    features = AssetSelection.assets(*[k for k in FEATURE_ASSETS if k in keys])
    models = AssetSelection.assets(*[k for k in MODEL_ASSETS if k in keys])
    defs = defs.map_resolved_asset_specs(func=lambda s: apply_freshness_policy(s, FEATURES_FRESHNESS),
                                selection=features)
    return defs.map_resolved_asset_specs(func=lambda s: apply_freshness_policy(s, MODEL_FRESHNESS),
                                selection=models)
