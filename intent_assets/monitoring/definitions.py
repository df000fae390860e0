from dagster import Definitions

from intent_assets.monitoring.assets import (
    online_offline_consistency,
    served_scores,
    session_anomalies,
)
from intent_assets.monitoring.jobs import consistency_job, daily_reports_job
from intent_assets.monitoring.sensors import run_failure_alert_sensor

defs = Definitions(assets=[session_anomalies, served_scores, online_offline_consistency],
                   jobs=[daily_reports_job, consistency_job],
                   sensors=[run_failure_alert_sensor])
