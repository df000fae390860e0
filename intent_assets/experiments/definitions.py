from dagster import Definitions

from intent_assets.experiments.assets import ab_readout, experiment_data

defs = Definitions(assets=[experiment_data, ab_readout])
