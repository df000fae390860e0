from dagster import Definitions

from intent_assets.reports.assets import reliability_report

# The weekly retrain_job (training) selects the report after the model chain.
defs = Definitions(assets=[reliability_report])
