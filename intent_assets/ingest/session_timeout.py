"""The session timeout: a pause longer than the project's `session_timeout_min` ends a session.

Stated rule (docs/data.md): the events of one source `session_id`, in (event_time, event_id)
order, start a new session after more than `timeout_min` minutes without an event. The first
part keeps the source id; a later part is `{session_id}~{k}` (k = 1, 2, ... in time order), so
ids stay stable when a day is re-materialized. The streaming job closes a session's state on
the same timeout (`--session-timeout`, set from the same setting).

One rule in two forms: `split_sessions` on Spark (orders, sessions, batch features) and
`split_sessions_frame` on pandas (snapshots); a test holds them equal.
"""

from __future__ import annotations

import pandas as pd

from intent_resources.project_config import ProjectConfig

SESSION_TIMEOUT_MIN = ProjectConfig.session_timeout_min
PART_SEPARATOR = "~"


def _check(timeout_min) -> float:
    if not timeout_min or float(timeout_min) <= 0:
        raise ValueError(f"session timeout must be a positive number of minutes, got {timeout_min!r}")
    return float(timeout_min)


def split_sessions_frame(events: pd.DataFrame, timeout_min: float = SESSION_TIMEOUT_MIN
                         ) -> pd.DataFrame:
    """`events` with `session_id` rewritten by the timeout rule (rows and their order kept)."""
    limit = pd.Timedelta(minutes=_check(timeout_min))
    if events.empty:
        return events
    order = events.sort_values(["session_id", "event_time", "event_id"], kind="stable")
    gap = order.groupby("session_id", sort=False)["event_time"].diff()
    part = (gap > limit).groupby(order["session_id"], sort=False).cumsum()
    later = part.fillna(0).to_numpy() > 0
    if not later.any():
        return events
    moved = order.index[later]
    out = events.copy()
    out.loc[moved, "session_id"] = (order.loc[moved, "session_id"].astype(str) + PART_SEPARATOR
                                    + part[later].astype(int).astype(str)).to_numpy()
    return out


def split_sessions(events, timeout_min: float = SESSION_TIMEOUT_MIN):
    """The same rule on a Spark DataFrame of contract events."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    limit_us = int(round(_check(timeout_min) * 60 * 1_000_000))
    w = Window.partitionBy("session_id").orderBy("event_time", "event_id")
    t = F.unix_micros("event_time")
    starts = (t - F.lag(t).over(w) > limit_us).cast("int")
    part = F.sum(F.coalesce(starts, F.lit(0))).over(
        w.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    return (events.withColumn("_part", part)
            .withColumn("session_id", F.when(F.col("session_id").isNotNull()
                                             & (F.col("_part") > 0), F.concat_ws(
                PART_SEPARATOR, F.col("session_id"), F.col("_part").cast("string")))
                .otherwise(F.col("session_id")))
            .drop("_part"))
