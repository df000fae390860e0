"""Batch user and product features, checked value by value on small hand-made tables.

Day D's row is "as of D+1 00:00 UTC". The examples put data exactly on that instant and on the
day after, so a leak of the future into day D's row changes a checked value.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from intent_assets.features.batch import product_features, user_features
from streaming_jobs.contract import COLUMNS
from streaming_jobs.feature_spec import PRODUCT_FEATURES, USER_FEATURES

D1, D2 = "2024-03-10", "2024-03-11"
CUT1, CUT2 = pd.Timestamp("2024-03-11", tz="UTC"), pd.Timestamp("2024-03-12", tz="UTC")

EVENTS_DDL = ", ".join(
    f"{c} timestamp" if c in ("event_time", "received_time")
    else f"{c} double" if c in ("price", "revenue", "discount") else f"{c} string"
    for c in COLUMNS)
ORDERS_DDL = ("order_id string, user_id string, session_id string, order_time timestamp, "
              "n_items int, revenue double, discount double, has_coupon boolean")
SESSIONS_DDL = (
    "session_id string, user_id string, start_time timestamp, end_time timestamp, "
    "duration_s double, n_events int, n_views int, n_carts int, n_removes int, n_searches int, "
    "n_page_views int, n_checkouts int, n_purchases int, revenue double, device string, "
    "country string, traffic_source string, label int, purchased_in_session boolean, "
    "first_purchase_time timestamp, is_bot boolean, is_single_heartbeat boolean, "
    "is_trainable boolean")
CATALOG_DDL = ("product_id string, category_id string, category_code string, brand string, "
               "list_price double, margin double")

PRODUCTS = {  # product: (category, brand)
    "p1": ("c1", "A"), "p2": ("c1", "B"), "p3": ("c2", "B"), "p4": ("c2", "A"),
    "p5": ("c1", "A"), "p6": ("c3", "C"), "p7": ("c4", "D"),
    "p8": ("c4", "D"),
}


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def event(time: str, kind: str, session: str, user: str, product=None, price=None,
          order=None) -> dict:
    category, brand = PRODUCTS.get(product, (None, None))
    return {"event_id": f"{session}-{time}-{kind}-{product}", "event_time": ts(time),
            "event_type": kind, "user_id": user, "session_id": session, "product_id": product,
            "category_id": category, "brand": brand, "price": price, "order_id": order,
            "received_time": ts(time)}


def events_frame(spark, rows: list[dict]):
    frame = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    return spark.createDataFrame(frame.astype(object).where(frame.notna(), None), EVENTS_DDL)


def session(session_id: str, user: str, start: str, is_bot: bool = False) -> dict:
    start_time = ts(start)
    return {"session_id": session_id, "user_id": user, "start_time": start_time,
            "end_time": start_time + pd.Timedelta(minutes=10), "duration_s": 600.0, "n_events": 3,
            "n_views": 2, "n_carts": 0, "n_removes": 0, "n_searches": 0, "n_page_views": 1,
            "n_checkouts": 0, "n_purchases": 0, "revenue": 0.0, "device": "desktop",
            "country": "US", "traffic_source": "direct", "label": 0,
            "purchased_in_session": False, "first_purchase_time": None, "is_bot": is_bot,
            "is_single_heartbeat": False, "is_trainable": not is_bot}


def order(order_id: str, user: str, session_id: str, time: str, revenue: float, discount,
          coupon: bool) -> dict:
    return {"order_id": order_id, "user_id": user, "session_id": session_id,
            "order_time": ts(time), "n_items": 1, "revenue": revenue, "discount": discount,
            "has_coupon": coupon}


def frame_of(spark, rows: list[dict], ddl: str):
    frame = pd.DataFrame(rows)
    return spark.createDataFrame(frame.astype(object).where(frame.notna(), None), ddl)


def by_key(result, key: str) -> pd.DataFrame:
    frame = result.toPandas()
    # Spark hands timestamps to pandas as naive wall time in the session zone, which is UTC.
    for column in ("event_timestamp", "created_timestamp"):
        frame[column] = frame[column].dt.tz_localize("UTC")
    return frame.set_index([key, "date"]).sort_index()


# -- users ------------------------------------------------------------------------------------

USER_SESSIONS = [
    session("s_dec", "u1", "2023-12-11 23:00:00"),
    session("s_feb", "u1", "2024-02-01 10:00:00"),       # lifetime, not in 30 days
    session("s1", "u1", "2024-03-01 10:00:00"),
    session("s2", "u1", "2024-03-10 09:00:00"),
    session("s4", "u1", "2024-03-11 00:00:00"),           # exactly the first cut: day D2
    session("s_u2", "u2", "2024-03-10 15:00:00"),
    session("s_bot", "bot1", "2024-03-10 12:00:00", is_bot=True),
    session("s_u3", "u3", "2024-03-11 09:00:00"),
    session("s_u4", "u4", "2023-12-12 00:00:00"),
    session("s_u4b", "u4", "2024-02-10 00:00:00"),        # exactly 30 days before the first cut
]
USER_ORDERS = [
    order("o0", "u1", "s_dec", "2023-12-11 23:59:59", 100.0, 0.0, False),  # 90 days + 1 s back
    order("o1", "u1", "s1", "2024-03-01 10:30:00", 50.0, 0.1, True),
    order("o2", "u1", "s2", "2024-03-10 09:30:00", 30.0, None, False),      # discount unknown
    order("o3", "u1", "s4", "2024-03-11 00:00:00", 1000.0, 0.5, True),      # at the cut: D2 only
    order("o4", "u4", "s_u4", "2023-12-12 00:00:00", 20.0, 0.0, False),     # exactly 90 days back
]
USER_EVENTS = [
    event("2024-03-01 10:05:00", "view", "s1", "u1", "p1", 10.0),
    event("2024-03-01 10:06:00", "view", "s1", "u1", "p1", 10.0),
    event("2024-03-01 10:30:00", "purchase", "s1", "u1", "p1", 10.0, "o1"),
    event("2024-03-10 09:05:00", "view", "s2", "u1", "p2", 20.0),
    event("2024-03-10 09:06:00", "view", "s2", "u1", "p3", 100.0),
    event("2024-03-10 09:07:00", "search", "s2", "u1"),
    event("2024-03-10 09:30:00", "purchase", "s2", "u1", "p2", 20.0, "o2"),
    event("2024-03-10 09:30:00", "purchase", "s2", "u1", "p3", 100.0, "o2"),
    event("2024-03-10 15:01:00", "view", "s_u2", "u2", "p2", 20.0),
    *[event(f"2024-03-10 12:00:0{i}", "view", "s_bot", "bot1", "p3", 100.0) for i in range(5)],
    # Day D2: u1 turns to category c2 (brand B).
    *[event(f"2024-03-11 00:00:0{i}", "view", "s4", "u1", "p3", 100.0) for i in range(3)],
    event("2024-03-11 00:00:10", "purchase", "s4", "u1", "p3", 100.0, "o3"),
    event("2024-03-11 09:01:00", "view", "s_u3", "u3", "p1", 10.0),
]


@pytest.fixture(scope="module")
def user_rows(spark):
    return by_key(user_features(frame_of(spark, USER_ORDERS, ORDERS_DDL),
                                frame_of(spark, USER_SESSIONS, SESSIONS_DDL),
                                events_frame(spark, USER_EVENTS), [D2, D1]), "user_id")


def test_user_rows_exist_for_every_user_seen_before_the_cut_on_each_requested_day(user_rows):
    assert sorted(user_rows.loc[(slice(None), D1), :].index.get_level_values(0)) == [
        "bot1", "u1", "u2", "u4"]
    assert sorted(user_rows.loc[(slice(None), D2), :].index.get_level_values(0)) == [
        "bot1", "u1", "u2", "u3", "u4"]
    assert (user_rows["event_timestamp"].loc[(slice(None), D1)] == CUT1).all()
    assert (user_rows["created_timestamp"].loc[(slice(None), D2)] == CUT2).all()
    assert list(user_rows.columns[2:]) == [name for name, _, _ in USER_FEATURES]


def test_user_features_by_hand_on_day_one(user_rows):
    u1 = user_rows.loc[("u1", D1)]
    assert u1["user_purchases_lifetime"] == 3
    assert u1["user_purchases_90d"] == 2                # o0 is 90 days and 1 s before the cut
    assert u1["user_days_since_last_purchase"] == pytest.approx(14.5 / 24)
    assert u1["user_aov_lifetime"] == pytest.approx(60.0)
    assert u1["user_aov_90d"] == pytest.approx(40.0)
    assert u1["user_sessions_30d"] == 2                 # s1, s2; s_feb is older, s4 is at the cut
    assert u1["user_session_purchase_rate"] == pytest.approx(3 / 4)
    assert u1["user_top_category_view_share"] == pytest.approx(3 / 4)   # c1: p1, p1, p2
    assert u1["user_top_brand_view_share"] == pytest.approx(2 / 4)      # A: 2, B: 2
    assert u1["user_top_category_purchase_share"] == pytest.approx(2 / 3)
    assert u1["user_coupon_share"] == pytest.approx(1 / 3)
    assert u1["user_mean_discount"] == pytest.approx(0.05)  # o2's unknown discount is left out


def test_user_features_move_with_the_day(user_rows):
    u1 = user_rows.loc[("u1", D2)]
    assert u1["user_purchases_lifetime"] == 4
    assert u1["user_purchases_90d"] == 3
    assert u1["user_days_since_last_purchase"] == pytest.approx(1.0)
    assert u1["user_aov_lifetime"] == pytest.approx(1180 / 4)
    assert u1["user_aov_90d"] == pytest.approx(1080 / 3)
    assert u1["user_sessions_30d"] == 3
    assert u1["user_session_purchase_rate"] == pytest.approx(4 / 5)
    # The top category changes hands: c2 now has 4 of 7 views.
    assert u1["user_top_category_view_share"] == pytest.approx(4 / 7)
    assert u1["user_top_brand_view_share"] == pytest.approx(5 / 7)
    assert u1["user_top_category_purchase_share"] == pytest.approx(2 / 4)
    assert u1["user_coupon_share"] == pytest.approx(2 / 4)
    assert u1["user_mean_discount"] == pytest.approx(0.2)


def test_windows_include_their_first_instant_and_nothing_before(user_rows):
    assert user_rows.loc[("u4", D1), "user_purchases_90d"] == 1     # order at exactly cut - 90d
    assert user_rows.loc[("u4", D2), "user_purchases_90d"] == 0
    assert user_rows.loc[("u4", D2), "user_purchases_lifetime"] == 1
    assert user_rows.loc[("u4", D1), "user_sessions_30d"] == 1      # session at exactly cut - 30d
    assert user_rows.loc[("u4", D2), "user_sessions_30d"] == 0


def test_shrunk_rate_and_recency_weighted_counts_by_hand(user_rows):
    # As of D1, all users: 4 orders (o0, o1, o2, o4) in 7 human sessions; 3 pseudo-sessions.
    prior = 4 / 7
    u1, u2 = user_rows.loc[("u1", D1)], user_rows.loc[("u2", D1)]
    assert u1["user_sessions_lifetime"] == 4
    assert u1["user_purchase_rate_shrunk"] == pytest.approx((3 + 3 * prior) / (4 + 3))
    assert u2["user_purchase_rate_shrunk"] == pytest.approx(3 * prior / (1 + 3))
    # Age in days from the cut (D1 + 1) to each order's day, halving every 14 days.
    assert u1["user_purchases_decayed"] == pytest.approx(
        2 ** (-91 / 14) + 2 ** (-10 / 14) + 2 ** (-1 / 14))
    assert u1["user_sessions_decayed"] == pytest.approx(
        2 ** (-91 / 14) + 2 ** (-39 / 14) + 2 ** (-10 / 14) + 2 ** (-1 / 14))
    assert u2["user_purchases_decayed"] == 0.0
    # A day later every weight has halved by 2^(-1/14) and the new day's rows come in.
    later = user_rows.loc[("u1", D2)]
    assert later["user_purchases_decayed"] == pytest.approx(
        u1["user_purchases_decayed"] * 2 ** (-1 / 14) + 2 ** (-1 / 14))


def test_user_without_orders_gets_zero_counts_and_null_means(user_rows):
    u2 = user_rows.loc[("u2", D1)]
    assert u2["user_purchases_lifetime"] == 0 and u2["user_purchases_90d"] == 0
    assert u2["user_sessions_30d"] == 1
    assert u2["user_session_purchase_rate"] == 0.0
    assert u2["user_top_category_view_share"] == 1.0
    for name in ("user_days_since_last_purchase", "user_aov_lifetime", "user_aov_90d",
                 "user_top_category_purchase_share", "user_coupon_share", "user_mean_discount"):
        assert math.isnan(u2[name]), name


def test_bot_sessions_count_for_nothing(user_rows):
    bot = user_rows.loc[("bot1", D1)]
    assert bot["user_sessions_30d"] == 0
    assert math.isnan(bot["user_session_purchase_rate"])
    assert math.isnan(bot["user_top_category_view_share"])


def test_user_row_of_a_day_ignores_everything_from_the_cut_on(spark, user_rows):
    def before(rows, column):
        return [r for r in rows if r[column] < CUT1]

    # Inputs also come in reverse order: the rows must not depend on it.
    truncated = by_key(user_features(
        frame_of(spark, before(USER_ORDERS, "order_time")[::-1], ORDERS_DDL),
        frame_of(spark, before(USER_SESSIONS, "start_time")[::-1], SESSIONS_DDL),
        events_frame(spark, before(USER_EVENTS, "event_time")[::-1]), [D1]), "user_id")
    pd.testing.assert_frame_equal(truncated, user_rows.loc[(slice(None), D1), :])


def test_building_the_frames_runs_no_spark_job(spark):
    """All requested days are one lazy plan: nothing runs until the caller writes it."""
    orders = frame_of(spark, USER_ORDERS, ORDERS_DDL)
    sessions = frame_of(spark, USER_SESSIONS, SESSIONS_DDL)
    events = events_frame(spark, USER_EVENTS)
    context = spark.sparkContext
    context.setJobGroup("build-batch-features", "building the plans only")
    try:
        users = user_features(orders, sessions, events, [D1, D2, "2024-03-12"])
        products = product_features(events, None, [D1, D2, "2024-03-12"], sessions=sessions)
        assert context.statusTracker().getJobIdsForGroup("build-batch-features") == []
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
    assert set(users.columns) >= {"user_id", "event_timestamp", "date"}
    assert set(products.columns) >= {"product_id", "event_timestamp", "date"}


# -- products ---------------------------------------------------------------------------------

def _many(n: int, time: str, kind: str, product: str, price: float, session: str = "s") -> list:
    return [event(f"{time}:{i:02d}", kind, session, "u", product, price) for i in range(n)]


PRODUCT_EVENTS = [
    *_many(10, "2024-02-20 10:00", "view", "p1", 10.0),
    *_many(1, "2024-02-20 11:00", "purchase", "p1", 10.0),
    *_many(10, "2024-03-09 10:00", "view", "p1", 12.0),
    *_many(2, "2024-03-09 11:00", "cart", "p1", 12.0),
    *_many(1, "2024-03-09 12:00", "purchase", "p1", 12.0),
    *_many(5, "2024-03-05 10:00", "view", "p2", 20.0),
    *_many(4, "2024-03-08 10:00", "view", "p3", 100.0),
    *_many(2, "2024-03-03 23:59", "view", "p3", 100.0),      # just before the 7-day window
    *_many(1, "2024-03-08 11:00", "cart", "p3", 100.0),
    *_many(1, "2024-03-08 12:00", "purchase", "p3", 100.0),
    *_many(1, "2024-02-05 10:00", "view", "p4", 50.0),       # older than 30 days: no row
    *_many(1, "2024-02-10 00:00", "view", "p7", 8.0),        # exactly 30 days: D1 only
    *_many(1, "2024-03-01 10:00", "view", "p5", 40.0),       # in 30 days, not in 7
    *_many(1, "2024-03-09 10:00", "cart", "p6", 5.0),        # category c3 has no views
    *_many(1, "2024-03-09 10:00", "view", "p8", None),       # never seen with a price
    *_many(7, "2024-03-10 10:00", "view", "p2", 20.0, session="s_bot"),
    # From the first cut on: day D2.
    *_many(1, "2024-03-11 00:00", "view", "p1", 99.0),
    *_many(1, "2024-03-11 00:01", "purchase", "p1", 99.0),
]
PRODUCT_SESSIONS = [session("s", "u", "2024-02-20 10:00:00"),
                    session("s_bot", "bot", "2024-03-10 10:00:00", is_bot=True)]
CATALOG = [{"product_id": "p1", "category_id": "c1", "category_code": "x", "brand": "A",
            "list_price": 11.0, "margin": 0.3},
           {"product_id": "p2", "category_id": "c1", "category_code": "x", "brand": "B",
            "list_price": 20.0, "margin": 0.4}]


@pytest.fixture(scope="module")
def product_rows(spark):
    return by_key(product_features(events_frame(spark, PRODUCT_EVENTS),
                                   frame_of(spark, CATALOG, CATALOG_DDL), [D1, D2],
                                   sessions=frame_of(spark, PRODUCT_SESSIONS, SESSIONS_DDL)),
                  "product_id")


def test_product_rows_cover_products_with_events_in_the_last_30_days(product_rows):
    day1 = product_rows.loc[(slice(None), D1), :]
    assert sorted(day1.index.get_level_values(0)) == ["p1", "p2", "p3", "p5", "p6", "p7", "p8"]
    day2 = product_rows.loc[(slice(None), D2), :]
    assert sorted(day2.index.get_level_values(0)) == ["p1", "p2", "p3", "p5", "p6", "p8"]
    assert (day1["event_timestamp"] == CUT1).all()
    assert list(product_rows.columns[2:]) == [name for name, _, _ in PRODUCT_FEATURES]
    assert set(product_rows.index.get_level_values(1)) == {D1, D2}


def test_conversion_rates_are_smoothed_toward_the_category(product_rows):
    p1, p2, p3 = (product_rows.loc[(p, D1)] for p in ("p1", "p2", "p3"))
    # c1 over 7 days: 15 views (p1 10, p2 5), 2 carts, 1 purchase; over 30: 26 views, 2 purchases.
    assert p1["product_view_to_purchase_7d"] == pytest.approx((1 + 20 * 1 / 15) / (10 + 20))
    assert p1["product_view_to_purchase_30d"] == pytest.approx((2 + 20 * 2 / 26) / (20 + 20))
    assert p1["product_cart_to_purchase_7d"] == pytest.approx((1 + 5 * 1 / 2) / (2 + 5))
    assert p1["product_cart_to_purchase_30d"] == pytest.approx((2 + 5 * 2 / 2) / (2 + 5))
    assert p2["product_view_to_purchase_7d"] == pytest.approx((0 + 20 * 1 / 15) / (5 + 20))
    assert p2["product_cart_to_purchase_7d"] == pytest.approx(1 / 2)   # no carts: the prior
    assert p3["product_view_to_purchase_7d"] == pytest.approx((1 + 20 * 1 / 4) / (4 + 20))
    assert p3["product_view_to_purchase_30d"] == pytest.approx((1 + 20 * 1 / 6) / (6 + 20))
    assert (p1["product_views_7d"], p2["product_views_7d"], p3["product_views_7d"]) == (10, 5, 4)
    assert product_rows.loc[("p5", D1), "product_views_7d"] == 0


def test_category_without_views_falls_back_to_the_overall_rate(product_rows):
    p6 = product_rows.loc[("p6", D1)]
    # All categories over 7 days: 20 views, 2 purchases.
    assert p6["product_view_to_purchase_7d"] == pytest.approx(2 / 20)
    assert p6["product_cart_to_purchase_7d"] == pytest.approx(0.0)   # c3: 1 cart, 0 purchases


def test_price_is_the_latest_seen_and_banded_against_the_category_median(product_rows):
    day1 = product_rows.loc[(slice(None), D1), :].droplevel(1)
    assert day1["product_price"].drop("p8").to_dict() == {"p1": 12.0, "p2": 20.0, "p3": 100.0,
                                                          "p5": 40.0, "p6": 5.0, "p7": 8.0}
    assert math.isnan(day1.loc["p8", "product_price"])
    assert math.isnan(day1.loc["p8", "product_price_rel_category_median"])
    # c1 median of (12, 20, 40) is 20.
    assert day1.loc["p1", "product_price_rel_category_median"] == pytest.approx(0.6)
    assert day1["product_price_band"].to_dict() == {"p1": "low", "p2": "mid", "p3": "mid",
                                                    "p5": "high", "p6": "mid", "p7": "mid",
                                                    "p8": "unknown"}


def test_margin_comes_from_the_catalog_when_it_has_the_product(spark, product_rows):
    assert product_rows.loc[("p1", D1), "product_margin_proxy"] == pytest.approx(0.3)
    assert math.isnan(product_rows.loc[("p3", D1), "product_margin_proxy"])
    without = product_features(events_frame(spark, PRODUCT_EVENTS), None, [D1]).toPandas()
    assert without["product_margin_proxy"].isna().all()
    # Without sessions the bot's 7 views of p2 count.
    assert without.set_index("product_id").loc["p2", "product_views_7d"] == 12


def test_product_row_of_a_day_ignores_everything_from_the_cut_on(spark, product_rows):
    p1 = product_rows.loc[("p1", D2)]
    assert (p1["product_views_7d"], p1["product_price"]) == (11, 99.0)   # D2 does see them
    earlier = [e for e in PRODUCT_EVENTS if e["event_time"] < CUT1][::-1]
    truncated = by_key(product_features(
        events_frame(spark, earlier), frame_of(spark, CATALOG, CATALOG_DDL), [D1],
        sessions=frame_of(spark, PRODUCT_SESSIONS, SESSIONS_DDL)), "product_id")
    pd.testing.assert_frame_equal(truncated, product_rows.loc[(slice(None), D1), :])


def test_feature_lists_name_kinds_and_serving_defaults():
    for features in (USER_FEATURES, PRODUCT_FEATURES):
        for name, kind, default in features:
            assert kind in {"int", "float", "string"}
            if kind == "int":
                assert default == 0, name
            elif kind == "float":
                assert isinstance(default, float), name
            else:
                assert default == "unknown", name
