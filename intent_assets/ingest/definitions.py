from dagster import Definitions

from intent_assets.ingest.assets import orders, raw_clickstream, sessions
from intent_assets.ingest.gaps import source_gaps

defs = Definitions(assets=[raw_clickstream, orders, sessions], asset_checks=[source_gaps])
