"""The consistency report rebuilds a folded request at its own event, ties included: two events
of a session at one instant are ordered by id, as the session state machine orders them."""

from __future__ import annotations

import pandas as pd

from intent_assets.monitoring.consistency import compare, logged_requests, offline_session_features
from streaming_jobs.moment import fold_event
from streaming_jobs.session_state import FEATURE_NAMES

T = pd.Timestamp("2026-10-14T10:00:00Z")


def _events() -> pd.DataFrame:
    # e2 and e3 at the same instant: the shop asks at e2, the stream applies e3 after it
    return pd.DataFrame({
        "event_id": ["e1", "e2", "e3"],
        "event_time": [T, T + pd.Timedelta(seconds=30), T + pd.Timedelta(seconds=30)],
        "event_type": ["view", "view", "cart"],
        "user_id": "u1", "session_id": "s1",
        "product_id": ["p1", "p2", "p2"], "category_id": ["c1", "c2", "c2"],
        "price": [10.0, 25.0, 25.0], "device": "mobile", "country": "DE",
        "traffic_source": "search", "page_type": None,
    })


def _served_at(events: pd.DataFrame, upto: int) -> dict:
    """What the API scores at event `upto`: the events before it folded, then it."""
    rows = events.to_dict("records")
    return fold_event(None, rows[upto], rows[:upto]).features


def test_a_request_at_the_first_of_two_tied_events_is_rebuilt_at_that_event():
    events = _events()
    served = _served_at(events, 1)
    moment = fold_event(None, events.to_dict("records")[1], events.to_dict("records")[:1])
    assert moment.as_of_event_id == "e2" and served["session_n_cart_adds"] == 0
    record = {"request_id": "r1", "user_id": "u1", "session_id": "s1", "product_id": "p2",
              "as_of": (T + pd.Timedelta(seconds=30)).isoformat(), "features": served,
              "fallback": [], "model_version": "v", "feature_service": "intent_model_v1"}

    named = logged_requests(pd.DataFrame([{**record, "as_of_event_id": "e2"}]))
    offline = offline_session_features(events, named)
    table = compare([served], offline, FEATURE_NAMES)
    assert table["mismatches"].sum() == 0, table[table["mismatches"] > 0]

    # without the event's id the instant alone cannot tell e2 from e3: the rebuild takes the
    # later one, and the cart added at e3 shows as a mismatch that serving never had
    unnamed = logged_requests(pd.DataFrame([record]))
    assert offline_session_features(events, unnamed).loc[0, "session_n_cart_adds"] == 1
    # a request at e3 is rebuilt at e3 either way
    at_e3 = _served_at(events, 2)
    named_e3 = logged_requests(pd.DataFrame([{**record, "features": at_e3,
                                              "as_of_event_id": "e3"}]))
    assert compare([at_e3], offline_session_features(events, named_e3),
                   FEATURE_NAMES)["mismatches"].sum() == 0


def test_a_mismatch_from_an_event_that_arrived_late_is_told_apart():
    from intent_assets.monitoring.consistency import late_events

    events = _events().assign(event_time=[T, T + pd.Timedelta(seconds=30),
                                          T + pd.Timedelta(seconds=60)])
    # e2 happened at +30 s but reached the shop's pipeline at +10 min, after e3 (the stream
    # re-folds it then); e1 and e3 arrived on time
    events["received_time"] = [T + pd.Timedelta(seconds=1), T + pd.Timedelta(minutes=10),
                               T + pd.Timedelta(seconds=61)]
    # a second session, every event on time
    calm = _events().assign(session_id="s2", event_id=["g1", "g2", "g3"],
                            event_time=[T, T + pd.Timedelta(seconds=30),
                                        T + pd.Timedelta(seconds=60)],
                            received_time=[T + pd.Timedelta(seconds=s) for s in (1, 31, 61)])
    rows, calm_rows = events.to_dict("records"), calm.to_dict("records")
    base = {"user_id": "u1", "product_id": "p2", "fallback": [], "model_version": "v",
            "feature_service": "intent_model_v1",
            "as_of": (T + pd.Timedelta(seconds=60)).isoformat()}
    requests = logged_requests(pd.DataFrame([
        # scored at +2 min from the stream's state, which had e1 and e3 only
        {**base, "request_id": "r1", "session_id": "s1", "as_of_event_id": "e3",
         "ts": (T + pd.Timedelta(minutes=2)).isoformat(),
         "features": fold_event(None, rows[2], rows[:1]).features},
        # asked again at +11 min, once the stream had re-folded e2: it matches, but e2 arrived
        # after the event the vector stands at, so it counts as late data (not a mismatch)
        {**base, "request_id": "r2", "session_id": "s1",
         "ts": (T + pd.Timedelta(minutes=11)).isoformat(),
         "features": fold_event(None, rows[2], rows[:2]).features},
        {**base, "request_id": "r3", "session_id": "s2", "as_of_event_id": "g3",
         "ts": (T + pd.Timedelta(minutes=2)).isoformat(),
         "features": fold_event(None, calm_rows[2], calm_rows[:2]).features}]))
    both = pd.concat([events, calm], ignore_index=True)
    late = late_events(both, requests)
    assert late == [1, 1, 0]
    table = compare(requests["features"].tolist(), offline_session_features(both, requests),
                    FEATURE_NAMES, late).set_index("feature")
    # the late event counts offline, not in r1's vector: skew from late data, all of it
    assert table.loc["session_n_events", "mismatches"] == 1
    assert (table["mismatches"] == table["mismatches_late_data"]).all()
    assert table.loc["session_n_events", "mismatch_rate_all_arrived"] == 0.0


def test_the_check_errs_on_skew_and_only_warns_on_late_data():
    from intent_assets.monitoring.consistency import mismatch_verdict

    events = _events().assign(event_time=[T, T + pd.Timedelta(seconds=30),
                                          T + pd.Timedelta(seconds=60)])
    rows = events.to_dict("records")
    on_time = fold_event(None, rows[2], rows[:2]).features
    requests = [on_time] * 3
    offline = pd.DataFrame([on_time] * 3)
    # one request of three missed a late event: session_n_events is off there only
    stale = dict(on_time, session_n_events=on_time["session_n_events"] - 1)
    table = compare([stale, on_time, on_time], offline, FEATURE_NAMES, late=[1, 0, 0])
    assert mismatch_verdict(table, 0.01) == ([], ["session_n_events"])
    assert mismatch_verdict(table, 0.5) == ([], [])
    # the same mismatch on a request whose events had all arrived is the implementation's skew
    table = compare([stale, on_time, on_time], offline, FEATURE_NAMES, late=[0, 0, 1])
    skew, late = mismatch_verdict(table, 0.01)
    assert skew == ["session_n_events"] and late == []
    assert table.set_index("feature").loc["session_n_events", "mismatch_rate_all_arrived"] == 0.5
    # every request late: nothing is known of the implementation's skew, and it is not judged
    table = compare(requests, offline.assign(session_n_events=0), FEATURE_NAMES, late=[1, 1, 1])
    assert mismatch_verdict(table, 0.01) == ([], ["session_n_events"])
