from dagster import AssetSelection, Definitions, ScheduleDefinition, define_asset_job

from intent_assets.training.assets import (
    calibrated_model,
    challenger_models,
    logistic_baseline,
    rules_baseline,
    tuned_model,
)
from intent_assets.training.checks import GATES

# A fresh training set, then the chain and its report; the blocking gates on calibrated_model
# stop the run there when the candidate is not good enough, so the report and publication never
# see it.
retrain_job = define_asset_job(
    "retrain_job",
    selection=AssetSelection.assets("training_set", tuned_model, rules_baseline, logistic_baseline,
                                    challenger_models, calibrated_model, "reliability_report"),
    tags={"intent/kind": "retrain"},
)
retrain_job_schedule = ScheduleDefinition(job=retrain_job, cron_schedule="0 3 * * 1",
                                          execution_timezone="UTC")

defs = Definitions(
    assets=[tuned_model, rules_baseline, logistic_baseline, challenger_models, calibrated_model],
    asset_checks=GATES,
    jobs=[retrain_job],
    schedules=[retrain_job_schedule],
)
