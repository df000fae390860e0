"""The live session state, as Dagster sees it: an external asset the streaming job keeps fresh."""

from dagster import AssetSpec

from intent_assets.catalog import code_reference_here

session_features_stream = AssetSpec(
    key="session_features_stream",
    group_name="streaming",
    description=("Live session features in Redis, kept by the Spark streaming job.\n\n"
                 "Feast's layout for session_fv; closed sessions land in the lake's "
                 "session_features. The supervisor sensor records each health check as an "
                 "observation."),
    kinds={"spark", "redis"},
    metadata={"feature_view": "session_fv", "job": "streaming_jobs.session_job",
              **code_reference_here()},
)
