"""What the source lacks that the simulator always has, counted: the `source_gaps` check.

Real exports (REES46 among them) have no order id, device, country, traffic source, coupon or
discount; no remove_from_cart; prices of 0; session ids shared by two user ids; sessions already
open when the data starts or still open when it ends. Each has a stated rule (docs/data.md,
"Your own data"); this check counts the rows each rule touched, so none passes silently. It
warns, never blocks: the graph is built on what there is.
"""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetIn,
    asset_check,
)

from intent_assets.ingest.sessionize import GRACE_MINUTES
from intent_assets.partitions import daily_partitions, neighbouring_days
from intent_resources.storage import LakeSlice

CONTEXT_FIELDS = ("device", "country", "traffic_source")


def gap_counts(events: pd.DataFrame, sessions: pd.DataFrame, lake_days: list[str],
               grace_minutes: int = GRACE_MINUTES) -> dict[str, int]:
    """Rows each stated rule for missing data applied to (0 where the source is complete)."""
    purchases = events[events["event_type"] == "purchase"]
    out = {
        # rule: the order is `{session_id}:{minute}`
        "purchases_without_order_id": int(purchases["order_id"].isna().sum()),
        # rule: context stays null; the model treats it as missing
        **{f"sessions_without_{c}": int(sessions[c].isna().sum()) for c in CONTEXT_FIELDS},
        # rule: no coupon, discount 0 in user features
        "purchases_without_discount": int(purchases["discount"].isna().sum()),
        # rule: kept (a free item is a price); it adds nothing to revenue
        "events_with_price_0": int((events["price"] == 0).sum()),
        # rule: the session belongs to its first user id
        "sessions_with_several_user_ids": int(
            (events[events["session_id"].isin(sessions["session_id"])]
             .groupby("session_id")["user_id"].nunique() > 1).sum()),
    }
    # rule: without remove_from_cart events, cart removals count 0
    carts = int((events["event_type"] == "cart").sum())
    removes = int((events["event_type"] == "remove_from_cart").sum())
    out["carts_but_no_remove_from_cart"] = carts if carts and not removes else 0
    # rule: a session open when the data starts begins at its first event in the data; one still
    # open when it ends keeps label 0 unless it bought (its grace window is cut short)
    grace = pd.Timedelta(minutes=grace_minutes)
    if lake_days and len(sessions):
        first = pd.Timestamp(lake_days[0], tz="UTC")
        out["sessions_maybe_open_before_the_data"] = int(
            ((sessions["date"] == lake_days[0]) & (sessions["start_time"] < first + grace)).sum())
        last_event = events.loc[events["date"] == lake_days[-1], "event_time"].max() \
            if "date" in events else events["event_time"].max()
        out["sessions_with_labels_cut_by_the_data_end"] = int(
            ((sessions["date"] == lake_days[-1]) & (sessions["end_time"] + grace > last_event)).sum()) \
            if pd.notna(last_event) else 0
    return out


@asset_check(asset="sessions", name="source_gaps", partitions_def=daily_partitions,
             additional_ins={"raw_clickstream": AssetIn(partition_mapping=neighbouring_days)},
             description="Rows touched by each stated rule for data the source lacks "
                         "(order ids, device, country, traffic source, discounts, "
                         "remove_from_cart; prices of 0; shared session ids; sessions cut by "
                         "the data's start or end). Warns, never blocks.")
def source_gaps(context: AssetCheckExecutionContext, sessions: LakeSlice,
                raw_clickstream: LakeSlice) -> AssetCheckResult:
    table = sessions.pandas()
    events = raw_clickstream.pandas()
    if table.empty or events.empty:
        # nothing to judge is said as such, never a pass
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN, metadata={
            "status": "no data", "sessions": len(table), "events": len(events),
            "reason": "no sessions or no events for this day"})
    days = raw_clickstream.storage.partitions("raw_clickstream")
    counts = gap_counts(events, table, days)
    touched = {k: v for k, v in counts.items() if v}
    return AssetCheckResult(
        passed=not touched, severity=AssetCheckSeverity.WARN,
        metadata={"sessions": len(table), "events": len(events), **counts,
                  "rules_applied": ", ".join(sorted(touched)) or "none"})
