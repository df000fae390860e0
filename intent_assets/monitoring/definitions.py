from dagster import Definitions

from intent_assets.monitoring.assets import served_scores, session_anomalies
from intent_assets.monitoring.checks import feature_drift
from intent_assets.monitoring.jobs import daily_reports_job
from intent_assets.monitoring.sensors import run_failure_alert_sensor

defs = Definitions(assets=[session_anomalies, served_scores], asset_checks=[feature_drift],
                   jobs=[daily_reports_job],
                   sensors=[run_failure_alert_sensor])
