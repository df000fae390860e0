"""Every partitions definition of the project, in one place."""

import datetime as dt

from dagster import (
    BackfillPolicy,
    DailyPartitionsDefinition,
    Definitions,
    DynamicPartitionsDefinition,
    TimeWindowPartitionMapping,
)

from intent_resources.project_config import SIMULATOR_FIRST_DAY

# The embedded simulator's history starts here. Assets are declared on this calendar; when
# Definitions are built, `on_calendar` moves every daily asset, check and job to the configured
# first day (imported data starts when the data does).
FIRST_DAY = SIMULATOR_FIRST_DAY

daily_partitions = DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")
# The days the scoring API serves. Its decision log is dated by the clock, so today is a
# partition while it is being written (end_offset=1): the demo judges what it just served.
served_days = DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC", end_offset=1)


def calendar(first_day: str, last_day: str | None = None) -> DailyPartitionsDefinition:
    """The daily partitions from `first_day` to `last_day` (UTC; open-ended without one)."""
    if first_day == FIRST_DAY and last_day is None:
        return daily_partitions
    # Dagster's end date is exclusive
    end = None if last_day is None else (dt.date.fromisoformat(last_day)
                                         + dt.timedelta(days=1)).isoformat()
    return DailyPartitionsDefinition(start_date=first_day, end_date=end, timezone="UTC")


def on_calendar(defs: Definitions, first_day: str, last_day: str | None = None) -> Definitions:
    """The same definitions with every daily asset and check on the calendar from `first_day`
    to `last_day`; jobs infer their partitions from their assets.

    Imported data ends on its last day: its calendar holds exactly the imported days, which is
    also what the UI's launch dialog lists (it shows a partitions definition's last 90 days)."""
    if first_day == FIRST_DAY and last_day is None:
        return defs
    days = calendar(first_day, last_day)
    # the decision log is dated by the clock: served days run to today whatever the data's end
    served = DailyPartitionsDefinition(start_date=first_day, timezone="UTC", end_offset=1)
    moved = {daily_partitions: days, served_days: served}
    defs = defs.map_resolved_asset_specs(
        func=lambda s: s.replace_attributes(partitions_def=moved[s.partitions_def])
        if s.partitions_def in (daily_partitions, served_days) else s)
    return _checks_on(defs, days)


def _checks_on(defs: Definitions, days: DailyPartitionsDefinition) -> Definitions:
    """Daily asset checks defined on their own (`@asset_check`) moved to `days`.

    Dagster has no public way to change a check's partitions, so its check specs are replaced.
    """
    from dagster._record import replace

    checks = []
    for check_def in defs.asset_checks or []:
        specs = check_def.node_check_specs_by_output_name
        if any(s.partitions_def == daily_partitions for s in specs.values()):
            specs = {n: replace(s, partitions_def=days) if s.partitions_def == daily_partitions
                     else s for n, s in specs.items()}
            check_def = check_def.__class__.dagster_internal_init(
                **{**check_def.get_attributes_dict(), "check_specs_by_output_name": specs})
        checks.append(check_def)
    return replace(defs, asset_checks=checks)


def daily(group: str) -> dict:
    """Asset settings of every daily asset: the daily partitions, and a backfill of any range
    as one run (one Spark job)."""
    return dict(partitions_def=daily_partitions, backfill_policy=BackfillPolicy.single_run(),
                group_name=group)

# A session belongs to the day it starts, but it may run past midnight and its label looks a
# grace window past its end, so day D's sessions read day D+1's events when they exist; and
# they read day D-1's, so the after-midnight tail of yesterday's sessions is not taken for a
# session starting today.
neighbouring_days = TimeWindowPartitionMapping(start_offset=-1, end_offset=1,
                                               allow_nonexistent_upstream_partitions=True)

# Batch features look back over history: "lifetime" means everything the lake holds up to a year.
history_to_date = TimeWindowPartitionMapping(start_offset=-365, end_offset=0,
                                             allow_nonexistent_upstream_partitions=True)
last_30_days = TimeWindowPartitionMapping(start_offset=-30, end_offset=0,
                                          allow_nonexistent_upstream_partitions=True)

# One partition per A/B experiment, keyed by its name; added when an experiment starts
# (`instance.add_dynamic_partitions("experiments", [name])`).
experiment_partitions = DynamicPartitionsDefinition(name="experiments")
