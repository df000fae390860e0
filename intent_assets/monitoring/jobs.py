"""The daily reports job (the monitoring assets), for a day or a range.

Nightly runs are not scheduled: automation (intent_assets/automation.py) requests the day's
reports once its sessions are built.
"""

from dagster import AssetSelection, define_asset_job

DAILY_REPORTS = ("session_anomalies", "served_scores")

daily_reports_job = define_asset_job(
    "daily_reports_job", selection=AssetSelection.assets(*DAILY_REPORTS),
    description="A day's monitoring: session anomalies, served scores and their checks.")

# On the served days' calendar (today included), so apart from the daily reports.
consistency_job = define_asset_job(
    "consistency_job", selection=AssetSelection.assets("online_offline_consistency"),
    description="A served day's feature vectors rebuilt offline: skew per feature, drift vs "
                "training.")
