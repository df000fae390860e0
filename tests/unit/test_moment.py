"""The scoring moment: a request's event folded onto whatever state the stream left equals the
training snapshot of that cut, under any stream lag; an applied event never counts twice."""

from __future__ import annotations

import datetime as dt
import json

import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from intent_assets.features.snapshots import build_snapshots
from serving.api_requests import ScoreRequest
from streaming_jobs import session_state as ss
from streaming_jobs.contract import EVENT_TYPES, args_refusal, event_refusal, validate_events
from streaming_jobs.moment import APPLIED, FOLDED, STARTED, fold_args, fold_event
from streaming_jobs.session_fold import to_json

T0 = pd.Timestamp("2026-10-15 23:58:00", tz="UTC")  # sessions cross midnight: hour and weekday move
ALL = 10_000

_TYPES = ("view", "view", "view", "cart", "remove_from_cart", "page_view", "search", "checkout",
          "purchase")


@st.composite
def sessions(draw):
    """One session's events in random order, with ties in time broken by event id."""
    n = draw(st.integers(2, 18))
    ids = draw(st.lists(st.text("abcdef0123", min_size=1, max_size=4), min_size=n, max_size=n,
                        unique=True))
    events = []
    t = 0.0
    for i, event_id in enumerate(ids):
        t += draw(st.sampled_from([0.0, 0.0, 0.5, 3.0, 41.25, 170.0]))
        etype = "view" if i == 0 else draw(st.sampled_from(_TYPES))
        product = draw(st.sampled_from(["p1", "p2", "p3", None])) \
            if etype not in ("view", "cart", "remove_from_cart") \
            else draw(st.sampled_from(["p1", "p2", "p3"]))
        if etype in ("page_view", "search", "checkout"):
            product = None
        events.append({
            "event_id": f"e-{event_id}", "event_time": T0 + pd.Timedelta(seconds=t),
            "event_type": etype, "session_id": "s1", "user_id": "u1",
            "product_id": product,
            "category_id": draw(st.sampled_from(["c1", "c2", None])) if product else None,
            "price": draw(st.sampled_from([None, 0.0, 5.5, 19.99, 120.0])) if product else None,
            "device": draw(st.sampled_from(["mobile", None])) if i < 2 else "desktop",
            "country": "DE", "traffic_source": draw(st.sampled_from(["ads", "organic"])),
            "page_type": draw(st.sampled_from(["home", "cart", "listing"]))
            if etype == "page_view" else None,
        })
    return events


def _ordered(events: list[dict]) -> list[dict]:
    return sorted(events, key=lambda e: (e["event_time"], e["event_id"]))


def _stored(events: list[dict]):
    """The state after `events` as the stream writes it to Redis and the API parses it back."""
    state = ss.new_state()
    for event in events:
        ss.apply_event(state, event)
    return orjson.loads(to_json(ss.to_dict(state)).encode())


def _body_event(event: dict) -> dict:
    return {k: (v.isoformat() if k == "event_time" else v) for k, v in event.items()
            if k not in ("session_id", "user_id") and v is not None}


def _request(event: dict, preceding: list[dict] = ()) -> ScoreRequest:
    """The request as the API receives it in a JSON body."""
    body = {"user_id": event["user_id"], "session_id": event["session_id"],
            "event": _body_event(event), "preceding_events": [_body_event(e) for e in preceding]}
    return ScoreRequest.model_validate_json(json.dumps(body))


def _record(request: ScoreRequest, event) -> dict:
    """A body event as the contract's record: its fields, the request's session and user, the
    time in UTC."""
    return {**event.__dict__, "event_time": event.event_time.astimezone(dt.timezone.utc),
            "session_id": request.session_id, "user_id": request.user_id}


def _request_event(event: dict) -> dict:
    request = _request(event)
    return _record(request, request.event)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=sessions(), data=st.data())
def test_folded_features_equal_the_snapshot_of_the_cut_under_any_stream_lag(events, data):
    frame = pd.DataFrame(events)
    table = pd.DataFrame({"session_id": ["s1"], "is_trainable": [True], "label": [1]})
    snapshots = build_snapshots(frame, table, max_per_session=ALL, keep_rate=1.0)
    if snapshots.empty:
        return  # every scoring moment came after a purchase: no cut to compare
    cut = snapshots.iloc[data.draw(st.integers(0, len(snapshots) - 1), label="cut")]
    ordered = _ordered(events)
    k = [e["event_id"] for e in ordered].index(cut["snapshot_id"])
    # the stream's lag: Redis holds the state after any earlier event, or none at all
    lag = data.draw(st.integers(0, k + 1), label="events not yet in Redis")
    stored = _stored(ordered[:k + 1 - lag]) if lag <= k else None
    # the request carries the triggering event and at least the other events Redis lacks
    carried = data.draw(st.integers(max(lag - 1, 0), k), label="preceding events carried")
    request = _request(ordered[k], data.draw(st.permutations(ordered[k - carried:k])))

    # the API's path: the fold of the events built straight from the validated body
    moment = fold_args(stored, request.event_args(), request.preceding_args())

    assert moment == fold_event(stored, _record(request, request.event),
                                [_record(request, e) for e in request.preceding_events])
    assert moment.how == (APPLIED if lag == 0 else FOLDED if stored is not None else STARTED)
    assert moment.version == k + 1
    assert moment.features == {name: cut[name] for name in ss.FEATURE_NAMES}
    if lag <= 1:  # the triggering event alone is enough when the stream is one event behind
        alone = fold_args(stored, request.event_args())
        assert alone.features == moment.features


def test_an_event_the_stream_applied_is_not_counted_again():
    events = _ordered([
        {"event_id": "a", "event_time": T0, "event_type": "view", "session_id": "s1",
         "user_id": "u1", "product_id": "p1", "price": 10.0},
        {"event_id": "b", "event_time": T0 + pd.Timedelta(seconds=5), "event_type": "cart",
         "session_id": "s1", "user_id": "u1", "product_id": "p1", "price": 10.0},
        {"event_id": "c", "event_time": T0 + pd.Timedelta(seconds=9), "event_type": "view",
         "session_id": "s1", "user_id": "u1", "product_id": "p2", "price": 4.0},
    ])
    applied = fold_event(_stored(events[:2]), _request_event(events[1]))
    assert (applied.how, applied.features["session_n_cart_adds"],
            applied.features["session_cart_value"]) == (APPLIED, 1, 10.0)
    # the stream went past the event: its state answers, unchanged
    ahead = fold_event(_stored(events), _request_event(events[1]))
    assert (ahead.how, ahead.version, ahead.features["session_n_product_views"]) == (APPLIED, 3, 2)
    folded = fold_event(_stored(events[:1]), _request_event(events[1]))
    assert (folded.how, folded.features["session_cart_value"]) == (FOLDED, 10.0)


_FIELDS = st.fixed_dictionaries({
    "event_id": st.sampled_from(["e1", " ", None]),
    "event_type": st.sampled_from([*EVENT_TYPES, "click", None]),
    "user_id": st.sampled_from(["u1", None]),
    "session_id": st.just("s1"),
    "event_time": st.sampled_from([pd.Timestamp("2026-10-15 10:00", tz="UTC"),
                                   pd.Timestamp("1999-12-31 23:59", tz="UTC"), None]),
    "product_id": st.sampled_from(["p1", "", None]),
    "price": st.sampled_from([None, 0.0, 9.5, -1.0]),
    "revenue": st.sampled_from([None, 3.0, -2.0]),
    "discount": st.sampled_from([None, 0.0, 0.3, 1.5, -0.1]),
})


@settings(max_examples=80, deadline=None)
@given(record=_FIELDS)
def test_one_record_is_judged_as_the_contract_judges_a_frame(record):
    verdict = validate_events(pd.DataFrame([record]))
    want = None if verdict.quarantine.empty else verdict.quarantine["quarantine_reason"].iloc[0]
    assert event_refusal(record) == want
    if record["event_time"] is not None and record["revenue"] is None \
            and record["discount"] is None:  # an event as the API's requests carry it
        assert args_refusal(ss.event_args(record)) == want


# what a request body's event may hold (the schema refuses the rest with a 422): blank or
# space-only ids pass the schema, the contract refuses them
_BODY_EVENTS = st.fixed_dictionaries({
    "event_id": st.sampled_from(["e1", " ", "\u00a0", "e 2"]),
    "event_type": st.sampled_from(EVENT_TYPES),
    "event_time": st.sampled_from(["2026-10-15T10:00:00Z", "2026-10-15T12:00:00.000001+02:00",
                                   "1999-12-31T23:59:59.999999Z", "2000-01-01T01:00:00+01:00",
                                   "2000-01-01T00:00:00.000001+00:00"]),
}, optional={
    "product_id": st.sampled_from(["p1", " ", None]),
    "category_id": st.sampled_from(["c1", None]),
    "price": st.sampled_from([None, 0, 0.0, -0.0, 9, 9.5, -1, -0.01]),
    "device": st.sampled_from(["mobile", " ", None]),
    "country": st.sampled_from(["DE", None]),
    "traffic_source": st.sampled_from(["ads", None]),
    "page_type": st.sampled_from(["cart", None]),
})


@settings(max_examples=150, deadline=None)
@given(event=_BODY_EVENTS, user_id=st.sampled_from(["u1", " "]),
       session_id=st.sampled_from(["s1", "\u2003"]))
def test_a_body_event_is_cleaned_and_judged_as_its_contract_record(event, user_id, session_id):
    request = ScoreRequest.model_validate_json(json.dumps(
        {"user_id": user_id, "session_id": session_id, "event": event}))
    record = _record(request, request.event)
    assert request.event_args() == ss.event_args(record)
    assert args_refusal(request.event_args()) == event_refusal(record)


def test_request_events_that_break_the_contract_are_refused_with_the_reason():
    view = {"event_id": "e0", "event_type": "view", "event_time": "2026-10-15T10:00:00Z",
            "product_id": "p1"}
    later = {**view, "event_id": "e9", "event_time": "2026-10-15T10:00:09Z"}

    def refusal(**body):
        return ScoreRequest.model_validate_json(json.dumps(
            {"user_id": "u1", "session_id": "s1", **body})).event_refusal()

    assert refusal(event=view, preceding_events=[{**later, "event_time":
                                                  "2026-10-15T09:59:00Z"}]) is None
    assert refusal(event=view, preceding_events=[later]) == \
        "preceding_events must come before the triggering event"
    assert refusal(event=later, preceding_events=[later]) == \
        "preceding_events and event repeat an event_id"
    assert refusal(preceding_events=[view]) == "preceding_events without the triggering event"
    assert refusal(event={**view, "event_type": "cart", "product_id": None}) == \
        "event e0: missing product_id for a product event"
    assert refusal(event={**view, "price": -1.0}) == "event e0: negative price"
    assert refusal(event=later, preceding_events=[{**view, "event_time":
                                                   "1999-12-31T23:00:00Z"}]) == \
        "event e0: event_time before 2000-01-01"
    # what the schema itself says is a 422
    for bad in ({"event_type": "click"}, {"event_time": "2026-10-15T10:00:00"},
                {"event_time": 1760522400},
                {"price": "9.5"}, {"colour": "red"}):
        with pytest.raises(ValidationError):
            ScoreRequest.model_validate_json(json.dumps(
                {"user_id": "u1", "session_id": "s1", "event": {**view, **bad}}))
