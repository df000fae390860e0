"""Declarative automation: the nightly chain runs when its upstream partitions land.

The day's clickstream is ingested once the day has closed (01:30 UTC); every daily asset after
it is requested as soon as the partitions it reads are materialized, and not before. The served
day's online/offline consistency runs at the same tick, once the day's decision log is complete.
The weekly retrain stays a schedule (training). Applied once, in `intent_assets.definitions`.
"""

import datetime as dt

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
)

INGEST_CRON = "30 1 * * *"

# The latest day, after it has closed: the root of the chain, with no upstream to wait for.
INGEST = AutomationCondition.on_cron(INGEST_CRON, "UTC")
# The latest day, once every partition it reads is there and none is being rewritten.
EAGER = AutomationCondition.eager()
# The day's served scores, once its sessions are built. A new model (the weekly retrain) does
# not re-judge a past day; one must exist, though. The decision log is written outside Dagster.
SERVED = (EAGER.ignore(AssetSelection.assets("calibrated_model", "decision_log"))
          & ~AutomationCondition.any_deps_missing().ignore(AssetSelection.assets("decision_log")))

# The served day that has just closed (`served_days` runs to today, which is still being
# served), after the ingest tick: its decision log and its events are complete then. Its only
# partitioned input is the log, written outside Dagster; the training set must exist.
CLOSED_SERVED_DAY = (AutomationCondition.in_latest_time_window(dt.timedelta(days=2))
                     & ~AutomationCondition.in_latest_time_window())
CONSISTENCY = (
    CLOSED_SERVED_DAY
    & AutomationCondition.cron_tick_passed(INGEST_CRON, "UTC").since_last_handled()
    & ~AutomationCondition.any_deps_missing().ignore(AssetSelection.assets("decision_log"))
    & ~AutomationCondition.any_deps_in_progress()
).with_label(f"closed served day, after {INGEST_CRON} UTC")

CONDITIONS = {
    "raw_clickstream": INGEST,
    **{key: EAGER for key in ("orders", "sessions", "user_features", "product_features",
                              "session_snapshots", "online_features", "session_anomalies")},
    "served_scores": SERVED,
    "online_offline_consistency": CONSISTENCY,
}

# Stopped until switched on (in the UI, or by the deployment), like the schedules it replaces:
# a local demo or test run never starts runs by itself.
automation_condition_sensor = AutomationConditionSensorDefinition(
    "automation_condition_sensor", target=AssetSelection.assets(*CONDITIONS),
    default_status=DefaultSensorStatus.STOPPED, minimum_interval_seconds=30,
    description="Requests the nightly chain's daily partitions as their upstream lands.")


def with_automation(defs: Definitions) -> Definitions:
    """The same definitions with the nightly chain's automation conditions and their sensor."""
    defs = defs.map_resolved_asset_specs(
        func=lambda spec: spec.replace_attributes(
            automation_condition=CONDITIONS[spec.key.to_user_string()]),
        selection=AssetSelection.assets(*CONDITIONS))
    return Definitions.merge(defs, Definitions(sensors=[automation_condition_sensor]))
