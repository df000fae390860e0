from dagster import Definitions

from intent_assets.experiments.assets import ab_readout, decision_log_spec, experiment_data

defs = Definitions(assets=[decision_log_spec, experiment_data, ab_readout])
