from dagster import Definitions

from intent_assets.features.assets import (
    online_features,
    product_features,
    session_snapshots,
    training_set,
    user_features,
)
from intent_assets.features.jobs import nightly_features_job

defs = Definitions(assets=[user_features, product_features, session_snapshots, online_features,
                           training_set],
                   jobs=[nightly_features_job])
