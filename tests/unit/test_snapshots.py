"""Training snapshots: cuts at scoring moments, no feature that sees past its cut, fair weights."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from intent_assets.features.snapshots import SNAPSHOT_COLUMNS, build_snapshots
from intent_assets.ingest.simulator import SimulatorConfig, simulate_day
from streaming_jobs import session_state as ss
from streaming_jobs.contract import split_duplicates, validate_events

T0 = pd.Timestamp("2024-03-04 23:59:00", tz="UTC")
ALL = 10_000  # a per-session cap no session reaches: every cut kept


def ev(session, event_id, seconds, event_type, product=None, category=None, price=None,
       page_type=None, user="u1"):
    return {"event_id": event_id, "event_time": T0 + pd.Timedelta(seconds=seconds),
            "event_type": event_type, "session_id": session, "user_id": user,
            "product_id": product, "category_id": category, "price": price,
            "device": "desktop", "country": "US", "traffic_source": "organic",
            "page_type": page_type}


def sessions_of(events: pd.DataFrame, label: dict | None = None, bots=()) -> pd.DataFrame:
    """A minimal sessions table: label from a purchase in the session unless given."""
    g = events.groupby("session_id")
    out = pd.DataFrame({
        "session_id": g.size().index,
        "user_id": g["user_id"].first().to_numpy(),
        "n_events": g.size().to_numpy(),
        "label": g["event_type"].agg(lambda s: int((s == "purchase").any())).to_numpy(),
    })
    if label:
        out["label"] = [label.get(s, v) for s, v in zip(out["session_id"], out["label"])]
    out["is_bot"] = out["session_id"].isin(bots)
    out["is_single_heartbeat"] = out["n_events"] == 1
    out["is_trainable"] = ~out["is_bot"] & ~out["is_single_heartbeat"]
    return out


# Session "a" buys; views and carts after its purchase are not cuts. It crosses midnight.
BUYER = [
    ev("a", "a01", 0, "page_view", page_type="home"),
    ev("a", "a02", 5, "search"),
    ev("a", "a03", 20, "view", "p1", "c1", 10.0),
    ev("a", "a04", 40, "cart", "p1", "c1", 10.0),
    ev("a", "a05", 60, "page_view", page_type="cart"),
    ev("a", "a06", 70, "view", "p2", None, 5.0),
    ev("a", "a07", 80, "remove_from_cart", "p1", "c1", 10.0),
    ev("a", "a08", 85, "page_view", page_type="listing"),
    ev("a", "a09", 90, "cart", "p2", None, 5.0),
    ev("a", "a10", 150, "checkout"),
    ev("a", "a11", 200, "purchase", "p2", None, 5.0),
    ev("a", "a12", 230, "view", "p3", "c3", 7.0),
    ev("a", "a13", 240, "cart", "p3", "c3", 7.0),
    ev("a", "a14", 250, "page_view", page_type="cart"),
]
# Session "b" never buys but its user comes back within the grace window: label 1 by the table.
BROWSER = [ev("b", f"b{i:02d}", 10 * i, "view", f"p{i % 3}", "c1", 3.0, user="u2") for i in range(9)]
SINGLE = [ev("c", "c01", 0, "view", "p1", "c1", 10.0, user="u3")]
BOT = [ev("d", f"d{i:02d}", i, "view", f"p{i}", "c1", 1.0, user="bot") for i in range(30)]


@pytest.fixture
def small():
    events = pd.DataFrame(BUYER + BROWSER + SINGLE + BOT)
    return events, sessions_of(events, label={"b": 1}, bots={"d"})


def test_cuts_are_the_scoring_moments_before_the_first_purchase(small):
    events, sessions = small
    snap = build_snapshots(events, sessions, max_per_session=ALL, keep_rate=1.0)
    assert list(snap.columns) == list(SNAPSHOT_COLUMNS)
    a = snap[snap["session_id"] == "a"]
    assert a["snapshot_id"].tolist() == ["a03", "a04", "a05", "a06", "a07", "a09"]
    # a cart page view is scored against the latest product the session touched
    assert a["product_id"].tolist() == ["p1", "p1", "p1", "p2", "p1", "p2"]
    assert a["category_id"].tolist()[:3] == ["c1", "c1", "c1"]
    assert pd.isna(a["category_id"].iloc[3]) and a["category_id"].iloc[4] == "c1"
    assert (a["event_timestamp"] == events.set_index("event_id").loc[a["snapshot_id"], "event_time"]
            .to_numpy()).all()
    assert a["date"].tolist() == ["2024-03-04", "2024-03-04", "2024-03-05", "2024-03-05",
                                  "2024-03-05", "2024-03-05"]
    assert (a["session_has_purchased"] == 0).all() and (a["session_funnel_stage"] <= 2).all()
    assert a["session_n_events"].tolist() == [3, 4, 5, 6, 7, 9]
    assert a["session_cart_items"].tolist() == [0, 1, 1, 1, 0, 1]


def test_labels_weights_and_exclusions(small):
    events, sessions = small
    snap = build_snapshots(events, sessions, max_per_session=ALL, keep_rate=1.0)
    assert set(snap["session_id"]) == {"a", "b"}          # no bot, no single-heartbeat session
    assert snap.groupby("session_id")["label"].first().to_dict() == {"a": 1, "b": 1}
    # training rows weigh 1, and no column carries the session's final cut count (the future)
    assert (snap["weight"] == 1.0).all()
    assert not [c for c in snap.columns if "weight" in c and c != "weight"]
    assert snap.groupby("session_id").size().to_dict() == {"a": 6, "b": 9}
    relabelled = build_snapshots(events, sessions.assign(label=[1, 0, 0, 0]), max_per_session=ALL, keep_rate=1.0)
    assert relabelled.groupby("session_id")["label"].first().to_dict() == {"a": 1, "b": 0}


def test_cap_per_session_is_respected_and_seeded(small):
    events, sessions = small
    everything = build_snapshots(events, sessions, max_per_session=ALL, keep_rate=1.0)
    capped = build_snapshots(events, sessions, max_per_session=2, seed=5, keep_rate=1.0)
    assert capped.groupby("session_id").size().max() == 2
    # the cap keeps the earliest cuts: a decision a live scorer could make at each cut
    first_two = everything.sort_values("event_timestamp").groupby("session_id").head(2)
    assert set(capped["snapshot_id"]) == set(first_two["snapshot_id"])
    assert set(capped["snapshot_id"]) <= set(everything["snapshot_id"])
    # kept rows are the same rows the uncapped build gives, weight aside
    both = capped.merge(everything, on="snapshot_id", suffixes=("", "_all"))
    for col in ss.FEATURE_NAMES:
        assert (both[col] == both[f"{col}_all"]).all(), col
    again = build_snapshots(events, sessions, max_per_session=2, seed=5, keep_rate=1.0)
    pd.testing.assert_frame_equal(capped, again)
    # thinning is seeded: different seeds keep different cuts, the same seed the same ones
    kept_by_seed = {frozenset(build_snapshots(events, sessions, max_per_session=ALL, seed=s,
                                              keep_rate=0.5)["snapshot_id"]) for s in range(8)}
    assert len(kept_by_seed) > 1


def test_sessions_without_scoring_moments_give_no_rows():
    events = pd.DataFrame([ev("x", "x1", 0, "search"), ev("x", "x2", 5, "page_view", page_type="home"),
                           ev("x", "x3", 9, "checkout")])
    snap = build_snapshots(events, sessions_of(events))
    assert snap.empty and list(snap.columns) == list(SNAPSHOT_COLUMNS)
    assert snap["session_n_events"].dtype == np.int64


def test_features_of_a_cut_are_those_of_its_prefix(small):
    events, sessions = small
    snap = build_snapshots(events, sessions, max_per_session=ALL, keep_rate=1.0).set_index("snapshot_id")
    for session in (BUYER, BROWSER):
        state = ss.new_state()
        for e in session:
            ss.apply_event(state, e)
            if e["event_id"] in snap.index:
                row = ss.features(state)
                assert {k: snap.at[e["event_id"], k] for k in ss.FEATURE_NAMES} == \
                    {k: row[k] for k in ss.FEATURE_NAMES}


# -- leakage on a simulated day ----------------------------------------------------------------
@pytest.fixture(scope="module")
def simulated():
    config = SimulatorConfig(seed=23, sessions_per_day=500, n_products=400)
    sim = simulate_day(config, dt.date(2024, 6, 3))
    events = split_duplicates(validate_events(sim.events).events).events
    events = events.sort_values(["session_id", "event_time", "event_id"], ignore_index=True)
    # In a third of the sessions device, country and source only show up in the last two
    # events, so "first non-null" is a feature a cut can easily see past.
    rng = np.random.default_rng(0)
    sids = events["session_id"].unique()
    late = events["session_id"].isin(sids[rng.random(len(sids)) < 1 / 3])
    from_end = events.groupby("session_id").cumcount(ascending=False)
    events.loc[late & (from_end >= 2), ["device", "country", "traffic_source"]] = None
    bots = set(sim.oracle_sessions.loc[sim.oracle_sessions["is_bot"], "session_id"])
    comeback = set(sim.oracle_sessions.loc[sim.oracle_sessions["outcome"] == 2, "session_id"])
    return events, sessions_of(events, label={s: 1 for s in comeback}, bots=bots)


def rewrite_after_cuts(events: pd.DataFrame, rng: np.random.Generator):
    """Each session cut at a random event; everything after it dropped, altered or added to.

    Returns the rewritten events and the ids of the events at or before each session's cut.
    """
    ordered = events.sort_values(["session_id", "event_time", "event_id"], ignore_index=True)
    position = ordered.groupby("session_id").cumcount()
    size = ordered.groupby("session_id")["event_id"].transform("size")
    # one uniform draw per session (its first row's) picks the position of the cut
    cut_at = np.floor(rng.random(len(ordered)) * size).astype(int)
    cut_at = cut_at.groupby(ordered["session_id"]).transform("first")
    before = ordered[position <= cut_at]
    after = ordered[position > cut_at].copy()
    after = after[rng.random(len(after)) > 0.3]                        # drop some
    alter = rng.random(len(after)) < 0.5
    after.loc[alter, "event_type"] = rng.choice(["view", "cart", "remove_from_cart", "checkout"],
                                                alter.sum())
    after.loc[alter, "product_id"] = "9999999"
    after.loc[alter, "category_id"] = "42"
    after.loc[alter, "price"] = 999.0
    after["device"] = "tablet"
    after["country"] = "ZZ"
    after["traffic_source"] = "paid_social"
    after["event_time"] = after["event_time"] + pd.Timedelta(seconds=3)
    # every session gets more events after its cut, ending in a purchase
    added = []
    for sid, rows in before.groupby("session_id"):
        last = rows.iloc[-1].to_dict()
        for k, kind in enumerate(["view", "cart", "page_view", "checkout", "purchase"]):
            product = None if kind in ("page_view", "checkout") else "8888888"
            added.append({**last, "event_id": f"new-{sid}-{k}", "event_type": kind,
                          "event_time": last["event_time"] + pd.Timedelta(seconds=1 + k),
                          "product_id": product, "category_id": product and "77",
                          "price": 500.0, "page_type": "cart" if kind == "page_view" else None,
                          "device": "tablet", "country": "ZZ", "traffic_source": "email"})
    rewritten = pd.concat([before, after, pd.DataFrame(added)], ignore_index=True)
    return rewritten, set(before["event_id"])


@pytest.mark.parametrize("seed", [1, 2])
def test_no_feature_of_a_snapshot_sees_past_its_cut(simulated, seed):
    events, sessions = simulated
    changed, at_or_before = rewrite_after_cuts(events, np.random.default_rng(seed))
    bots = set(sessions.loc[sessions["is_bot"], "session_id"])
    changed_sessions = sessions_of(changed, bots=bots)
    # A single-heartbeat session that gets more events becomes trainable: which sessions train
    # is the sessions table's rule, so compare the sessions trainable both times.
    both = set(sessions.loc[sessions["is_trainable"], "session_id"]) & set(
        changed_sessions.loc[changed_sessions["is_trainable"], "session_id"])
    changed_sessions = changed_sessions.assign(
        is_trainable=changed_sessions["session_id"].isin(both))

    features = ["session_id", "user_id", "product_id", "category_id", "event_timestamp", "date",
                *ss.FEATURE_NAMES]
    base = build_snapshots(events, sessions, max_per_session=ALL, keep_rate=1.0)
    other = build_snapshots(changed, changed_sessions, max_per_session=ALL, keep_rate=1.0)
    early = base[base["snapshot_id"].isin(at_or_before)].set_index("snapshot_id")[features]
    early_other = other[other["snapshot_id"].isin(at_or_before)].set_index("snapshot_id")[features]
    assert len(early) > 300
    # the same cuts, with the same features, however the rest of the sessions went
    pd.testing.assert_frame_equal(early.sort_index(), early_other.sort_index())
    assert (early["session_device"] == "unknown").sum() > 20   # blanks the future would fill

    # the rewrite really changed the sessions' futures
    last_base = ss.replay(events).groupby("session_id").last()
    last_other = ss.replay(changed).groupby("session_id").last()
    assert (last_base["session_n_events"] != last_other["session_n_events"]).mean() > 0.5
    assert (last_other["session_has_purchased"] == 1).all()
    assert (last_other["session_device"] != last_base["session_device"]).mean() > 0.05

    # with sampling, neither WHICH cuts are kept nor their features may depend on the future:
    # selection that knows how a session ends would bias P(label | features)
    sampled = build_snapshots(events, sessions, max_per_session=3, seed=seed, keep_rate=0.5)
    sampled_other = build_snapshots(changed, changed_sessions, max_per_session=3, seed=seed,
                                    keep_rate=0.5)
    kept = sampled[sampled["snapshot_id"].isin(at_or_before)
                   & sampled["session_id"].isin(both)]
    kept_other = sampled_other[sampled_other["snapshot_id"].isin(at_or_before)
                               & sampled_other["session_id"].isin(both)]
    assert len(kept) > 100
    assert set(kept["snapshot_id"]) == set(kept_other["snapshot_id"])
    shared = kept.merge(kept_other, on="snapshot_id", suffixes=("", "_other"))
    for col in features:
        assert (shared[col].fillna(-1) == shared[f"{col}_other"].fillna(-1)).all(), col


def test_simulated_snapshots_invariants(simulated):
    events, sessions = simulated
    snap = build_snapshots(events, sessions, max_per_session=5, seed=0, keep_rate=1.0)
    first_buy = (events[events["event_type"] == "purchase"]
                 .sort_values(["event_time", "event_id"])
                 .groupby("session_id").first()[["event_time", "event_id"]])
    joined = snap.join(first_buy, on="session_id")
    bought = joined["event_time"].notna()
    assert bought.any()
    assert (joined.loc[bought, "event_timestamp"] <= joined.loc[bought, "event_time"]).all()
    assert (joined["snapshot_id"] != joined["event_id"]).all()
    assert (snap["session_has_purchased"] == 0).all() and (snap["session_funnel_stage"] < 3).any()
    assert snap.groupby("session_id").size().max() <= 5
    assert (snap["weight"] == 1.0).all()
    trainable = set(sessions.loc[sessions["is_trainable"], "session_id"])
    assert set(snap["session_id"]) <= trainable
    assert not set(snap["session_id"]) & set(sessions.loc[sessions["is_bot"], "session_id"])
    labels = sessions.set_index("session_id")["label"]
    assert (snap["label"] == snap["session_id"].map(labels)).all()
    assert 0 < snap["label"].mean() < 1
    kinds = events.set_index("event_id").loc[snap["snapshot_id"], ["event_type", "page_type"]]
    assert set(kinds["event_type"]) <= {"view", "cart", "remove_from_cart", "page_view"}
    assert (kinds.loc[kinds["event_type"] == "page_view", "page_type"] == "cart").all()
    # sessions with at most K cuts keep them all; longer ones keep their first K
    everything = build_snapshots(events, sessions, max_per_session=ALL, keep_rate=1.0)
    n_cuts = everything.groupby("session_id").size()
    assert (snap.groupby("session_id").size() == n_cuts.clip(upper=5)).all()


def test_duplicate_event_ids_are_refused(small):
    events, sessions = small
    with pytest.raises(ValueError, match="duplicate"):
        build_snapshots(pd.concat([events, events.iloc[:1]]), sessions)
