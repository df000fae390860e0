"""On-call: every failed run becomes an alert with its run id, failed step and a link to it."""

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from intent_assets.monitoring.alerting import run_failure_alert
from intent_resources.alerts import AlertsResource


@run_failure_sensor(name="run_failure_alert_sensor", default_status=DefaultSensorStatus.RUNNING,
                    monitor_all_code_locations=False)
def run_failure_alert_sensor(context: RunFailureSensorContext, alerts: AlertsResource) -> None:
    """Alert on-call when any run of this code location fails."""
    run = context.dagster_run
    failed = [event.step_key for event in context.get_step_failure_events() if event.step_key]
    error = context.failure_event.message
    subject, body = run_failure_alert(run.run_id, run.job_name, failed, error, alerts.run_url(run.run_id))
    alerts.send(subject, body)
