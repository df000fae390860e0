"""The session state machine: every feature on hand-written sessions, ordering, serialization."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intent_assets.ingest.simulator import SimulatorConfig, simulate_day
from streaming_jobs import session_state as ss
from streaming_jobs.contract import split_duplicates, validate_events

T0 = pd.Timestamp("2024-03-04 10:00:00", tz="UTC")  # a Monday


def ev(event_id, seconds, event_type, product=None, category=None, price=None, page_type=None,
       session="s1", user="u1", device="mobile", country="DE", source="email"):
    return {"event_id": event_id, "event_time": T0 + pd.Timedelta(seconds=seconds),
            "event_type": event_type, "session_id": session, "user_id": user,
            "product_id": product, "category_id": category, "price": price,
            "device": device, "country": country, "traffic_source": source,
            "page_type": page_type}


# A session that touches every feature. Device is known from the first event, country and
# traffic source only from the third, to check "first non-null".
SESSION = [
    ev("e01", 0, "page_view", page_type="home", country=None, source=None),
    ev("e02", 10, "search", country=None, source=None),
    ev("e03", 30, "view", "p1", "c1", 10.0),
    ev("e04", 40, "view", "p2", "c1", 20.0, device="desktop", country="FR", source="direct"),
    ev("e05", 50, "view", "p1", "c1", 10.0),
    ev("e06", 60, "cart", "p1", "c1", 10.0),
    ev("e07", 65, "cart", "p1", "c1", 12.0),       # same product, a different price
    ev("e08", 70, "cart", "p2", "c1", 20.0),
    ev("e09", 80, "page_view", page_type="cart"),
    ev("e10", 90, "remove_from_cart", "p1", "c1", 12.0),
    ev("e11", 100, "remove_from_cart", "p3", "c2", 5.0),  # never carted: nothing to take out
    ev("e12", 130, "checkout"),
    ev("e13", 200, "purchase", "p1", "c1", 10.0, device="tablet", country="PL", source="direct"),
]


def run(events):
    state = ss.new_state()
    rows = []
    for e in events:
        ss.apply_event(state, e)
        rows.append(ss.features(state))
    return state, rows


def test_feature_list_is_the_agreed_one():
    assert ss.FEATURE_NAMES == (
        "session_duration_s", "session_n_events", "session_n_page_views",
        "session_n_product_views", "session_n_distinct_products",
        "session_n_distinct_categories", "session_n_cart_adds", "session_n_cart_removes",
        "session_cart_value", "session_cart_items", "session_n_searches", "session_n_checkouts",
        "session_n_cart_page_views", "session_last_event_type",
        "session_seconds_since_last_event", "session_events_per_minute", "session_funnel_stage",
        "session_current_product_views", "session_current_category_views", "session_device",
        "session_traffic_source", "session_country", "session_hour", "session_weekday",
        "session_has_purchased")
    python_type = {"int": int, "float": float, "string": str}
    for name, kind, default in ss.SESSION_FEATURES:
        assert type(default) is python_type[kind], name


def test_unknown_session_gives_the_defaults():
    row = ss.features(ss.new_state())
    assert {k: row[k] for k in ss.FEATURE_NAMES} == ss.FEATURE_DEFAULTS
    assert row["version"] == 0 and row["session_id"] is None and row["last_event_time"] is None


def test_every_feature_after_the_last_event():
    state, rows = run(SESSION)
    last = rows[-1]
    assert {k: last[k] for k in ss.FEATURE_NAMES} == {
        "session_duration_s": 200.0,
        "session_n_events": 13,
        "session_n_page_views": 2,
        "session_n_product_views": 3,
        "session_n_distinct_products": 3,
        "session_n_distinct_categories": 2,
        "session_n_cart_adds": 3,
        "session_n_cart_removes": 2,
        "session_cart_value": 20.0,      # p1 @10 left with the purchase, p2 @20 stays
        "session_cart_items": 1,
        "session_n_searches": 1,
        "session_n_checkouts": 1,
        "session_n_cart_page_views": 1,
        "session_last_event_type": "purchase",
        "session_seconds_since_last_event": 70.0,
        "session_events_per_minute": pytest.approx(13 / (200 / 60)),
        "session_funnel_stage": 4,
        "session_current_product_views": 2,
        "session_current_category_views": 3,
        "session_device": "mobile",
        "session_traffic_source": "email",
        "session_country": "DE",
        "session_hour": 10,
        "session_weekday": 0,
        "session_has_purchased": 1,
    }
    assert last["session_id"] == "s1" and last["user_id"] == "u1"
    assert last["first_event_time"] == T0
    assert last["last_event_time"] == T0 + pd.Timedelta(seconds=200)
    assert last["last_event_id"] == "e13" and last["version"] == 13
    assert last["last_product_id"] == "p1" and last["last_category_id"] == "c1"


def test_features_along_the_way():
    _, rows = run(SESSION)
    first = rows[0]
    assert first["session_duration_s"] == 0.0
    assert first["session_seconds_since_last_event"] == 0.0
    assert first["session_events_per_minute"] == 1.0          # one event over "at least a minute"
    assert rows[1]["session_events_per_minute"] == 2.0        # 10 s still counts as a minute
    assert first["session_country"] == "unknown" and first["session_traffic_source"] == "unknown"
    assert first["session_current_product_views"] == 0
    assert rows[2]["session_country"] == "DE" and rows[2]["session_traffic_source"] == "email"
    # the second view of p1: two views of the product, three of its category
    assert rows[4]["session_current_product_views"] == 2
    assert rows[4]["session_current_category_views"] == 3
    assert rows[4]["session_seconds_since_last_event"] == 10.0
    # carting is not viewing: the current product's view count stays 2
    assert rows[5]["session_current_product_views"] == 2
    # the cart page: no product on it, the last product stays known for scoring
    assert rows[8]["session_current_product_views"] == 0
    assert rows[8]["session_current_category_views"] == 0
    assert rows[8]["last_product_id"] == "p2"
    assert rows[8]["session_n_cart_page_views"] == 1 and rows[8]["session_n_page_views"] == 2
    assert [r["session_funnel_stage"] for r in rows] == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 4]
    assert [r["session_has_purchased"] for r in rows] == [0] * 12 + [1]
    assert [r["version"] for r in rows] == list(range(1, 14))


def test_cart_arithmetic():
    _, rows = run(SESSION)
    value = [r["session_cart_value"] for r in rows]
    items = [r["session_cart_items"] for r in rows]
    assert items == [0, 0, 0, 0, 0, 1, 2, 3, 3, 2, 2, 2, 1]
    # the remove of p1 takes out the unit added last, at its cart price (12, not the event's)
    assert value == [0.0] * 5 + [10.0, 22.0, 42.0, 42.0, 30.0, 30.0, 30.0, 20.0]


def test_only_cart_pages_count_as_cart_page_views():
    events = [ev(f"e{i}", i, "page_view", page_type=page)
              for i, page in enumerate(["home", "listing", "cart", "account", None, "cart"])]
    _, rows = run(events)
    assert [r["session_n_cart_page_views"] for r in rows] == [0, 0, 1, 1, 1, 2]
    assert rows[-1]["session_n_page_views"] == 6 and rows[-1]["session_funnel_stage"] == 0


def test_cart_value_returns_exactly_to_zero_and_unknown_prices_count_as_zero():
    events = [ev("a", 0, "cart", "p1", "c1", 0.1), ev("b", 1, "cart", "p2", "c1", 0.2),
              ev("c", 2, "cart", "p3", "c1", float("nan")),
              ev("d", 3, "remove_from_cart", "p1", "c1"), ev("e", 4, "remove_from_cart", "p2", "c1")]
    _, rows = run(events)
    assert rows[2]["session_cart_value"] == pytest.approx(0.3) and rows[2]["session_cart_items"] == 3
    assert rows[-1]["session_cart_value"] == 0.0 and rows[-1]["session_cart_items"] == 1
    assert not math.isnan(rows[-1]["session_cart_value"])


def test_events_per_minute_and_calendar_across_midnight():
    sunday_night = pd.Timestamp("2024-03-03 23:55:00", tz="UTC")
    events = [dict(ev(f"e{i}", 0, "view", "p1", "c1", 1.0),
                   event_time=sunday_night + pd.Timedelta(minutes=2.5 * i)) for i in range(5)]
    _, rows = run(events)
    assert (rows[0]["session_hour"], rows[0]["session_weekday"]) == (23, 6)
    assert (rows[-1]["session_hour"], rows[-1]["session_weekday"]) == (0, 0)
    assert rows[-1]["session_duration_s"] == 600.0
    assert rows[-1]["session_events_per_minute"] == pytest.approx(0.5)


def test_missing_values_and_numeric_ids_are_cleaned():
    state = ss.new_state()
    ss.apply_event(state, {"event_id": "a", "event_time": T0.to_pydatetime(),
                           "event_type": "cart", "session_id": "s", "user_id": pd.NA,
                           "product_id": 1001, "category_id": np.nan, "price": None,
                           "device": None, "page_type": pd.NA})
    row = ss.features(state)
    assert row["user_id"] is None and row["session_device"] == "unknown"
    assert row["last_product_id"] == "1001" and row["session_n_distinct_categories"] == 0
    assert row["session_cart_items"] == 1 and row["session_cart_value"] == 0.0
    assert row["last_event_time"] == T0
    json.dumps(ss.to_dict(state))


def test_out_of_order_event_is_refused_and_leaves_the_state_alone():
    state, _ = run(SESSION[:5])
    before = ss.to_dict(state)
    with pytest.raises(ss.OutOfOrderEvent):
        ss.apply_event(state, SESSION[3])                     # earlier time
    with pytest.raises(ss.OutOfOrderEvent):
        ss.apply_event(state, SESSION[4])                     # the same event again
    with pytest.raises(ss.OutOfOrderEvent):                   # same time, smaller id
        ss.apply_event(state, dict(SESSION[4], event_id="e04z"))
    with pytest.raises(ValueError):
        ss.apply_event(state, dict(SESSION[5], session_id="other"))
    assert ss.to_dict(state) == before


def test_replay_sorts_its_input_and_matches_event_by_event_application():
    other = [ev(f"o{i}", 5 * i, t, "p9", "c9", 3.0, session="s0", user="u2")
             for i, t in enumerate(["view", "cart", "view"])]
    # a tie on event_time inside s0: event_id decides
    other.append(ev("o0b", 0, "search", session="s0", user="u2"))
    frame = pd.DataFrame(SESSION + other).sample(frac=1.0, random_state=3)
    out = ss.replay(frame)
    assert list(out.columns) == list(ss.OUTPUT_COLUMNS)
    assert out["last_event_id"].tolist() == ["o0", "o0b", "o1", "o2"] + [e["event_id"] for e in SESSION]
    _, rows = run(SESSION)
    expected = pd.DataFrame(rows)
    got = out[out["session_id"] == "s1"].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected[list(ss.OUTPUT_COLUMNS)], check_dtype=False)
    assert out.loc[out["last_event_id"] == "o0b", "session_last_event_type"].item() == "search"
    assert str(out["last_event_time"].dtype) == "datetime64[us, UTC]"


def test_replay_of_nothing_is_an_empty_typed_frame():
    empty = pd.DataFrame({"session_id": [], "event_id": [], "event_type": [],
                          "event_time": pd.Series([], dtype="datetime64[us, UTC]")})
    out = ss.replay(empty)
    assert out.empty and list(out.columns) == list(ss.OUTPUT_COLUMNS)
    assert out["session_n_events"].dtype == np.int64


def test_serialization_round_trips_exactly_through_json():
    state, _ = run(SESSION[:10])
    data = json.loads(json.dumps(ss.to_dict(state)))
    back = ss.from_dict(data)
    assert back == state and ss.to_dict(back) == ss.to_dict(state)
    assert ss.features(back) == ss.features(state)
    # the restored state goes on exactly as the original would
    for e in SESSION[10:]:
        ss.apply_event(back, e)
    assert ss.features(back) == run(SESSION)[1][-1]
    # and the copy is independent of the original
    assert ss.features(state)["version"] == 10


def test_serialization_refuses_another_schema():
    data = ss.to_dict(ss.new_state())
    with pytest.raises(ValueError):
        ss.from_dict({**data, "schema": 999})


event_kinds = st.sampled_from(["view", "cart", "remove_from_cart", "page_view", "search",
                               "checkout", "purchase"])
random_events = st.lists(
    st.tuples(event_kinds, st.sampled_from(["p1", "p2", "p3"]),
              st.sampled_from([1.5, 2.25, 10.0, 0.1, None]), st.integers(0, 120)),
    min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(random_events, st.integers(0, 30))
def test_cart_matches_a_multiset_and_restarts_anywhere(spec, cut):
    """Cart totals equal a plain unit list; stopping, serializing and resuming changes nothing."""
    events, t, units = [], 0, []
    for i, (kind, product, price, gap) in enumerate(spec):
        t += gap
        has_product = kind in ("view", "cart", "remove_from_cart", "purchase")
        events.append(ev(f"e{i:03d}", t, kind, product if has_product else None,
                         "c" + product[-1] if has_product else None, price))
    _, straight = run(events)
    state = ss.new_state()
    for i, e in enumerate(events):
        if i == cut:
            state = ss.from_dict(json.loads(json.dumps(ss.to_dict(state))))
        ss.apply_event(state, e)
        row = ss.features(state)
        assert row == straight[i]
        if e["event_type"] == "cart":
            units.append((e["product_id"], e["price"] or 0.0))
        elif e["event_type"] in ("remove_from_cart", "purchase"):
            mine = [j for j, (p, _) in enumerate(units) if p == e["product_id"]]
            if mine:
                units.pop(mine[-1])
        assert row["session_cart_items"] == len(units)
        assert row["session_cart_value"] == pytest.approx(sum(p for _, p in units), abs=1e-9)


@pytest.fixture(scope="module")
def simulated_events():
    sim = simulate_day(SimulatorConfig(seed=11, sessions_per_day=400, n_products=300),
                       dt.date(2024, 5, 10))
    return split_duplicates(validate_events(sim.events).events).events


def test_simulated_day_invariants(simulated_events):
    out = ss.replay(simulated_events)
    assert len(out) == len(simulated_events)
    assert set(out["last_event_id"]) == set(simulated_events["event_id"])
    by = out.groupby("session_id", sort=False)
    assert (out["version"] == by.cumcount() + 1).all()
    assert (out["session_n_events"] == out["version"]).all()
    for col in ("session_funnel_stage", "session_has_purchased", "session_n_distinct_products",
                "last_event_time", "session_duration_s"):
        assert (by[col].diff().dropna() >= pd.Timedelta(0) if col == "last_event_time"
                else by[col].diff().dropna() >= 0).all(), col
    assert (out["session_cart_items"] >= 0).all()
    assert (out["session_cart_value"] >= -1e-9).all()
    assert (out.loc[out["session_cart_items"] == 0, "session_cart_value"] == 0.0).all()
    assert (out["session_n_distinct_products"] <= out["session_n_events"]).all()
    assert out["session_funnel_stage"].max() == 4
    assert set(out["session_hour"]) <= set(range(24))
    assert (out["session_hour"] == out["last_event_time"].dt.hour).all()
    assert (out["session_weekday"] == out["last_event_time"].dt.weekday).all()
    assert (out["session_duration_s"]
            == (out["last_event_time"] - out["first_event_time"]).dt.total_seconds()).all()


def test_replay_equals_the_streaming_path_on_simulated_sessions(simulated_events):
    """The per-event path a streaming job runs and the batch replay produce identical rows."""
    out = ss.replay(simulated_events)
    some = sorted(simulated_events["session_id"].unique())[:40]
    chosen = simulated_events[simulated_events["session_id"].isin(some)]
    chosen = chosen.sort_values(["session_id", "event_time", "event_id"])
    rows, state, current = [], None, None
    for record in chosen.to_dict("records"):
        if record["session_id"] != current:
            state, current = ss.new_state(), record["session_id"]
        ss.apply_event(state, record)
        rows.append(ss.features(state))
    expected = pd.DataFrame(rows)[list(ss.OUTPUT_COLUMNS)]
    got = out[out["session_id"].isin(some)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
