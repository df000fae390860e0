"""The daily reports job (the monitoring assets) and its schedule."""

from dagster import AssetSelection, build_schedule_from_partitioned_job, define_asset_job

from intent_assets.partitions import daily_partitions

DAILY_REPORTS = ("session_anomalies", "served_scores")

daily_reports_job = define_asset_job(
    "daily_reports_job", selection=AssetSelection.assets(*DAILY_REPORTS),
    partitions_def=daily_partitions,
    description="Yesterday's monitoring: session anomalies, served scores and their checks.")

# Runs for the partition that has just closed (yesterday, UTC).
daily_reports_job_schedule = build_schedule_from_partitioned_job(
    daily_reports_job, hour_of_day=6, minute_of_hour=0, name="daily_reports_job_schedule")
