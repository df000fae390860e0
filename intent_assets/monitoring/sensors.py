"""On-call: every failed run becomes an alert with its run id, failed step and a link to it;
every minute, the stream's per-minute aggregates are judged and new incidents alerted."""

import json

from dagster import (
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from intent_assets.monitoring.alerting import live_anomaly_alert, run_failure_alert
from intent_assets.monitoring.live_anomalies import LiveRules, evaluate, needed_minutes
from intent_resources.alerts import AlertsResource
from intent_resources.redis import RedisResource
from streaming_jobs.minute_aggregates import DEFAULT_PROJECT, read_clock, read_counts


@run_failure_sensor(name="run_failure_alert_sensor", default_status=DefaultSensorStatus.RUNNING,
                    monitor_all_code_locations=False)
def run_failure_alert_sensor(context: RunFailureSensorContext, alerts: AlertsResource) -> None:
    """Alert on-call when any run of this code location fails."""
    run = context.dagster_run
    failed = [event.step_key for event in context.get_step_failure_events() if event.step_key]
    error = context.failure_event.message
    subject, body = run_failure_alert(run.run_id, run.job_name, failed, error, alerts.run_url(run.run_id))
    alerts.send(subject, body)


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def live_anomaly_sensor(context: SensorEvaluationContext, redis: RedisResource,
                        alerts: AlertsResource):
    """Every minute: the stream's per-minute aggregates by segment judged against the last two
    hours and the same hours the day before; each new incident (bot wave, outage, spike, broken checkout, price error) alerted once."""
    client = redis.client()
    clock = read_clock(client, DEFAULT_PROJECT)
    if clock is None:
        return SkipReason("no per-minute aggregates in Redis: the stream has not counted any "
                          "events yet")
    rules = LiveRules()
    cursor = json.loads(context.cursor) if context.cursor else None
    counts: dict = {}
    for first, last in needed_minutes(clock, cursor, rules):
        counts.update(read_counts(client, DEFAULT_PROJECT, first, last))
    new, cursor = evaluate(counts, clock, cursor, rules)
    if new:
        alerts.send(*live_anomaly_alert(new))
        context.log.warning(f"{len(new)} new live anomalies: "
                            + "; ".join(f"{f['check']} {f['dimension']}={f['value']}" for f in new))
    return SensorResult(cursor=json.dumps(cursor))
