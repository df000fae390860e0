"""Sessionization and labelling on hand-written event sequences, on the real local Spark."""

import pandas as pd
import pytest

from intent_assets.ingest.spark_ingest import ingest_day
from intent_assets.ingest.sessionize import build_orders, build_sessions
from intent_resources.storage import LakeSlice
from streaming_jobs.contract import arrow_schema
from tests.events import T0, event, frame


def _sessions(spark, lake, rows, days=("2026-10-01",)):
    events, quarantine = ingest_day(frame(rows))
    for day, part in events.groupby(events["event_time"].dt.strftime("%Y-%m-%d")):
        lake.write(part, "raw_clickstream", day, schema=arrow_schema())
    df = LakeSlice(lake, "raw_clickstream", ("2026-09-30", "2026-10-01", "2026-10-02")).spark(spark)
    out = build_sessions(df, list(days)).toPandas().set_index("session_id")
    return out, quarantine, df


def test_purchase_in_session_and_grace_window_labels(spark, lake):
    rows = [
        # s1 buys in session
        event("s1", "u1", 0), event("s1", "u1", 30, "cart"), event("s1", "u1", 60, "checkout"),
        event("s1", "u1", 90, "purchase", order_id="o1", revenue=10.0, discount=0.0),
        # s2 leaves with a cart; the same user buys 20 minutes later in s3: s2 is labelled 1
        event("s2", "u2", 0), event("s2", "u2", 20, "cart"),
        event("s3", "u2", 20 + 20 * 60, "page_view", page_type="cart"),
        event("s3", "u2", 30 + 20 * 60, "purchase", order_id="o3", revenue=10.0, discount=0.1),
        # s4 leaves; the same user buys 45 minutes later: outside the 30-minute grace window
        event("s4", "u4", 0), event("s4", "u4", 10),
        event("s5", "u4", 10 + 45 * 60, "purchase", order_id="o5", revenue=5.0),
        # s6: another user's purchase right after does not count
        event("s6", "u6", 0), event("s6", "u6", 5),
    ]
    s, _, _ = _sessions(spark, lake, rows)
    assert s.loc["s1", "label"] == 1 and s.loc["s1", "purchased_in_session"]
    assert s.loc["s2", "label"] == 1 and not s.loc["s2", "purchased_in_session"]
    assert s.loc["s3", "label"] == 1
    assert s.loc["s4", "label"] == 0
    assert s.loc["s6", "label"] == 0
    assert s.loc["s1", "n_events"] == 4 and s.loc["s1", "n_carts"] == 1 and s.loc["s1", "n_purchases"] == 1
    assert s.loc["s1", "duration_s"] == 90
    assert s.loc["s1", "revenue"] == 10.0
    # Spark hands timestamps back as naive UTC (the session time zone is UTC)
    assert s.loc["s1", "first_purchase_time"] == (T0 + pd.Timedelta(seconds=90)).tz_localize(None)


def test_bots_and_single_heartbeats_are_flagged_not_dropped(spark, lake):
    bot = [event("b", "bot", i * 1.5) for i in range(40)]          # 40 views a minute
    slow_reader = [event("h", "u1", i * 20.0) for i in range(40)]   # 3 views a minute
    single = [event("one", "u2", 0)]
    s, _, _ = _sessions(spark, lake, bot + slow_reader + single)
    assert s.loc["b", "is_bot"] and not s.loc["b", "is_trainable"]
    assert not s.loc["h", "is_bot"] and s.loc["h", "is_trainable"]
    assert s.loc["one", "is_single_heartbeat"] and not s.loc["one", "is_trainable"]
    assert len(s) == 3


def test_late_and_duplicate_events_count_once_and_midnight_sessions_stay_whole(spark, lake):
    late = event("s1", "u1", 50, "cart")
    late["received_time"] = late["event_time"] + pd.Timedelta(minutes=10)   # arrives late
    dup = event("s1", "u1", 10)
    dup_again = dict(dup, received_time=dup["received_time"] + pd.Timedelta(seconds=30))
    night = T0.normalize() + pd.Timedelta(hours=23, minutes=59)
    rows = [event("s1", "u1", 0), dup, dup_again, late,
            event("n", "u9", 0, day0=night), event("n", "u9", 120, day0=night)]
    s, quarantine, _ = _sessions(spark, lake, rows)
    assert s.loc["s1", "n_events"] == 3 and s.loc["s1", "n_carts"] == 1
    assert list(quarantine["quarantine_reason"]) == ["duplicate event_id"]
    # a session starting at 23:59 keeps its event after midnight and belongs to its start day
    assert s.loc["n", "n_events"] == 2 and s.loc["n", "date"] == "2026-10-01"


def test_orders_group_purchase_lines_and_synthesize_missing_ids(spark, lake):
    rows = [
        event("s1", "u1", 0, "purchase", order_id="o1", product_id="p1", revenue=9.0, discount=0.1),
        event("s1", "u1", 1, "purchase", order_id="o1", product_id="p2", revenue=18.0, discount=0.1),
        # imported purchases carry no order id: one order per session and minute
        event("r", "u2", 0, "purchase", product_id="p1", price=5.0),
        event("r", "u2", 5, "purchase", product_id="p2", price=7.0),
    ]
    _, _, df = _sessions(spark, lake, rows)
    orders = build_orders(df).toPandas().set_index("order_id")
    assert len(orders) == 2
    assert orders.loc["o1", "n_items"] == 2 and orders.loc["o1", "revenue"] == pytest.approx(27.0)
    assert orders.loc["o1", "has_coupon"]
    synthesized = orders.drop(index="o1").iloc[0]
    assert synthesized["session_id"] == "r" and synthesized["revenue"] == pytest.approx(12.0)
    assert not synthesized["has_coupon"]


def test_the_session_timeout_splits_on_spark_as_on_pandas(spark, lake):
    from intent_assets.ingest.session_timeout import split_sessions, split_sessions_frame

    minutes = [0, 5, 40, 41, 120, 150, 151]
    rows = ([event("s", "u1", m * 60) for m in minutes]
            + [event("t", "u2", m * 60, "cart") for m in (0, 29, 58)])
    events = frame(rows)
    lake.write(events, "raw_clickstream", "2026-10-01", schema=arrow_schema())
    df = LakeSlice(lake, "raw_clickstream", ("2026-10-01",)).spark(spark)
    for timeout in (30, 45, 10):
        on_spark = (split_sessions(df, timeout).select("event_id", "session_id").toPandas()
                    .set_index("event_id")["session_id"].sort_index())
        on_pandas = (split_sessions_frame(events, timeout).set_index("event_id")["session_id"]
                     .sort_index())
        assert on_spark.to_dict() == on_pandas.to_dict()
    split = split_sessions(df, 30)
    sessions = build_sessions(split, ["2026-10-01"]).toPandas().set_index("session_id")
    assert sorted(sessions.index) == ["s", "s~1", "s~2", "t"]
    assert sessions.loc["s~1", "n_events"] == 2 and sessions.loc["s~2", "n_events"] == 3
