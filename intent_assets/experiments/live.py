"""A live experiment's tables from what the platform records: the scoring API's decision log and
the `orders` asset. Same shapes as the simulator's (`simulator.ExperimentData`), so one readout
serves both.

- assignments: one row per user the API scored under the experiment — variant and designed
  share as logged, assigned at the first logged decision; the CUPED covariate is the user's
  orders and revenue in the `pre_period_days` before the experiment's start;
- exposures: one row per logged decision — the action, whether an offer was shown, latency,
  and `is_error` when a fallback answered. The log does not see clicks: an offer counts as
  clicked and accepted when the user later placed an order with a coupon;
- orders: the assigned users' orders from the start to the end day (inclusive).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from intent_assets.experiments.simulator import ExperimentData


def experiment_days(start: str, end: str, pre_period_days: int) -> tuple[list[str], list[str]]:
    """(the pre-period's days, the experiment's days) as YYYY-MM-DD strings."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < first:
        raise ValueError(f"the experiment ends ({end}) before it starts ({start})")
    if pre_period_days < 0:
        raise ValueError("pre_period_days must be >= 0")

    def span(a: dt.date, n: int) -> list[str]:
        return [(a + dt.timedelta(days=i)).isoformat() for i in range(n)]

    return (span(first - dt.timedelta(days=pre_period_days), pre_period_days),
            span(first, (last - first).days + 1))


def experiment_from_log(name: str, decisions: pd.DataFrame, orders: pd.DataFrame, start: str,
                        end: str, pre_period_days: int = 28) -> tuple[ExperimentData, dict]:
    """The experiment's three tables, and counts worth reporting (e.g. users seen in two
    variants, which a deterministic assignment never produces unless the design changed)."""
    start_ts = pd.Timestamp(start, tz="UTC")
    end_ts = pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    if decisions.empty or "experiment" not in decisions:
        raise ValueError(f"the decision log holds no decision of experiment {name!r} "
                         f"between {start} and {end}")
    log = decisions[(decisions["experiment"] == name) & decisions["variant"].notna()].copy()
    if log.empty:
        raise ValueError(f"the decision log holds no decision of experiment {name!r} "
                         f"between {start} and {end}")
    log["ts"] = pd.to_datetime(log["ts"], utc=True, format="ISO8601")
    log = log[(log["ts"] >= start_ts) & (log["ts"] < end_ts)].sort_values("ts", kind="stable")
    first = log.groupby("user_id", sort=True).first()
    switched = int((log.groupby("user_id")["variant"].nunique() > 1).sum())

    orders = orders.copy()
    if orders.empty:
        orders = pd.DataFrame({"order_id": [], "user_id": [], "revenue": [], "has_coupon": [],
                               "order_time": pd.to_datetime([], utc=True)})
    orders["order_time"] = pd.to_datetime(orders["order_time"], utc=True)
    ours = orders[orders["user_id"].isin(first.index)]
    pre_start = start_ts - pd.Timedelta(days=pre_period_days)
    pre = ours[(ours["order_time"] >= pre_start) & (ours["order_time"] < start_ts)] \
        .groupby("user_id")["revenue"].agg(["size", "sum"])
    assignments = pd.DataFrame({
        "experiment": name, "user_id": first.index.to_numpy(),
        "variant": first["variant"].to_numpy(), "assigned_time": first["ts"].to_numpy(),
        "pre_orders": pre["size"].reindex(first.index).fillna(0).astype(int).to_numpy(),
        "pre_revenue": pre["sum"].reindex(first.index).fillna(0.0).to_numpy(),
        "variant_share": first["variant_share"].astype(float).to_numpy(),
    })
    during = ours[(ours["order_time"] >= start_ts) & (ours["order_time"] < end_ts)]

    offered = log["offer"].notna() if "offer" in log else pd.Series(False, index=log.index)
    first_offer = log[offered].groupby("user_id")["ts"].min()
    coupon_orders = during[during["has_coupon"].fillna(False).astype(bool)]
    accepted_users = set(coupon_orders.loc[
        coupon_orders["order_time"].to_numpy()
        >= first_offer.reindex(coupon_orders["user_id"]).to_numpy(), "user_id"]) \
        if len(coupon_orders) and len(first_offer) else set()
    accepted = offered & log["user_id"].isin(accepted_users)
    fallback = log["fallback"] if "fallback" in log else pd.Series([[]] * len(log), index=log.index)
    exposures = pd.DataFrame({
        "experiment": name, "user_id": log["user_id"].to_numpy(),
        "variant": log["variant"].to_numpy(), "exposure_time": log["ts"].to_numpy(),
        "decision": log["action"].to_numpy(), "offer_shown": offered.to_numpy(),
        "offer_clicked": accepted.to_numpy(), "offer_accepted": accepted.to_numpy(),
        "latency_ms": pd.to_numeric(log["latency_ms"], errors="coerce").to_numpy(),
        "is_error": fallback.map(lambda f: bool(f) if isinstance(f, (list, np.ndarray))
                                 else False).to_numpy(),
    })
    experiment_orders = pd.DataFrame({
        "experiment": name, "order_id": during["order_id"].astype(str).to_numpy(),
        "user_id": during["user_id"].to_numpy(), "order_time": during["order_time"].to_numpy(),
        "revenue": pd.to_numeric(during["revenue"], errors="coerce").fillna(0.0).to_numpy(),
    })
    counts = {"decisions": int(len(log)), "users": int(len(assignments)),
              "users_in_two_variants": switched, "orders": int(len(experiment_orders)),
              "pre_period_orders": int(pre["size"].sum()) if len(pre) else 0}
    return ExperimentData(assignments, exposures, experiment_orders), counts
