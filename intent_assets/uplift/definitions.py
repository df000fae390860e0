from dagster import Definitions

from intent_assets.uplift.assets import (
    exploration_log,
    offer_policy_readout,
    uplift_model,
    upsell_preference,
)

defs = Definitions(assets=[exploration_log, uplift_model, offer_policy_readout,
                          upsell_preference])
