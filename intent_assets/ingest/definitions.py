from dagster import Definitions

from intent_assets.ingest.assets import orders, raw_clickstream, sessions

defs = Definitions(assets=[raw_clickstream, orders, sessions])
