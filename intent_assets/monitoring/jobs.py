"""The daily reports job (the monitoring assets), for a day or a range.

Nightly runs are not scheduled: automation (intent_assets/automation.py) requests the day's
reports once its sessions are built.
"""

from dagster import AssetSelection, define_asset_job

from intent_assets.partitions import daily_partitions

DAILY_REPORTS = ("session_anomalies", "served_scores")

daily_reports_job = define_asset_job(
    "daily_reports_job", selection=AssetSelection.assets(*DAILY_REPORTS),
    partitions_def=daily_partitions,
    description="A day's monitoring: session anomalies, served scores and their checks.")
