"""Every partitions definition of the project, in one place."""

from dagster import (
    BackfillPolicy,
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    TimeWindowPartitionMapping,
)

# The embedded simulator's history starts here; imported data uses the same calendar.
FIRST_DAY = "2026-10-01"

daily_partitions = DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")


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
