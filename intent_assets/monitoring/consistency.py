"""Online against offline: the feature vectors the API scored, rebuilt through the offline path.

The API logs a sample of the vectors it scored (`INTENT_LOG_FEATURES_RATE`) with the decision
and `as_of`, the instant its TTLs were judged at: the request's event time when the request
carries one, else the time of the session row it read (the session's latest event); with an
event, also `as_of_event_id`, the latest event the vector includes. Offline, the same request is
rebuilt at `as_of`: the session features by the session state machine over the session's events
up to that event (events tied at one instant are ordered by id, as the state machine orders
them), else up to that instant (what the training snapshots hold), the user and product
features by Feast's point-in-time join of the service's batch views (their TTLs applied). A
feature matches when both sides are missing or both hold the same value.

The offline path sees every event by its event time; the API saw only those that had arrived
when it answered, in the order they arrived. `late_events` counts, per request, the session's
events at or before `as_of` that arrived after the answer or after the event the vector stands
at (which may have been after the answer): a mismatch there is counted as skew from late data,
which no stream can avoid. The mismatches among requests whose events had all arrived are the implementation's
skew, which should be none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from streaming_jobs.contract import split_duplicates, validate_events
from streaming_jobs.feature_spec import FEATURE_VIEWS
from streaming_jobs.session_state import FEATURE_DEFAULTS, FEATURE_NAMES, replay

# A relative difference below this is the same number (float64 rounding through JSON and Redis).
RELATIVE_TOLERANCE = 1e-9
_REQUEST_COLUMNS = ["request_id", "ts", "user_id", "session_id", "product_id", "as_of",
                    "as_of_event_id", "model_version", "feature_service", "features"]


def logged_requests(decisions: pd.DataFrame) -> pd.DataFrame:
    """The decisions whose feature vector was logged and read from Redis (not a Redis fallback)."""
    if decisions.empty or "features" not in decisions or "as_of" not in decisions:
        return pd.DataFrame(columns=_REQUEST_COLUMNS)
    logged = decisions[decisions["features"].map(lambda f: isinstance(f, dict))
                       & decisions["as_of"].notna()]
    fallback = logged.get("fallback", pd.Series([[]] * len(logged), index=logged.index))
    logged = logged[fallback.map(lambda f: "redis_unavailable" not in (f or []))]
    out = logged.reindex(columns=_REQUEST_COLUMNS).reset_index(drop=True)
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True, format="ISO8601")
    out["ts"] = pd.to_datetime(out["ts"], utc=True, format="ISO8601")
    return out


def late_events(events: pd.DataFrame, requests: pd.DataFrame) -> list[int]:
    """Per request, the session's events at or before `as_of` that the served vector may not
    include: those that arrived (`received_time`) after the API answered (`ts`), and those that
    arrived after the event the vector stands at (`as_of_event_id`, else the session's event at
    `as_of`). The stream re-folds an out-of-order event once it arrives, but whether that was
    before the answer is unknown when the API's clock is not the events' (a replayed day, as in
    the demo), so such a request counts as late data too: a mismatch on it may be the
    implementation's, attributed to late data. In request order; 0 where times are unknown."""
    if not len(events) or "received_time" not in events:
        return [0] * len(requests)
    mine = events[events["session_id"].isin(set(requests["session_id"]))]
    times = pd.DataFrame({"session_id": mine["session_id"].to_numpy(),
                          "event_id": mine["event_id"].astype(str).to_numpy(),
                          "event_time": pd.to_datetime(mine["event_time"], utc=True),
                          "received_time": pd.to_datetime(mine["received_time"], utc=True)})
    by_session = {sid: frame for sid, frame in times.groupby("session_id", sort=False)}
    cut_ids = requests["as_of_event_id"] if "as_of_event_id" in requests \
        else pd.Series([None] * len(requests))
    counts = []
    for sid, as_of, answered, cut_id in zip(requests["session_id"], requests["as_of"],
                                            requests["ts"], cut_ids):
        frame = by_session.get(sid)
        if frame is None:
            counts.append(0)
            continue
        cut = frame[frame["event_id"] == cut_id] if isinstance(cut_id, str) else frame.iloc[:0]
        if cut.empty:
            cut = frame[frame["event_time"] == as_of]
        before = frame[frame["event_time"] <= as_of]
        late = pd.Series(False, index=before.index)
        if not pd.isna(answered):
            late |= before["received_time"] > answered
        if len(cut):
            late |= before["received_time"] > cut["received_time"].min()
        counts.append(int(late.sum()))
    return counts


def event_days(requests: pd.DataFrame) -> list[str]:
    """The days whose events rebuild the requests' sessions: each request's day and the one
    before (a session may cross midnight)."""
    days = set()
    for when in requests["as_of"]:
        days.update({when.strftime("%Y-%m-%d"), (when - pd.Timedelta(days=1)).strftime("%Y-%m-%d")})
    return sorted(days)


def offline_session_features(events: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """Per request, the session state machine's features after its event `as_of_event_id` when
    the request names one the session holds, else after the session's latest event at or before
    `as_of` (the empty session's defaults when there is none), in request order."""
    sessions = set(requests["session_id"])
    mine = events[events["session_id"].isin(sessions)] if len(events) else events
    if len(mine):
        mine = split_duplicates(validate_events(mine).events).events
    states = replay(mine) if len(mine) else pd.DataFrame(columns=["session_id", "last_event_time",
                                                                  *FEATURE_NAMES])
    states = states.assign(last_event_time=pd.to_datetime(states["last_event_time"], utc=True))
    by_session = {sid: frame for sid, frame in states.groupby("session_id", sort=False)}
    cut_ids = requests["as_of_event_id"] if "as_of_event_id" in requests \
        else pd.Series([None] * len(requests))
    rows = []
    for sid, as_of, cut_id in zip(requests["session_id"], requests["as_of"], cut_ids):
        frame = by_session.get(sid)
        at = frame[frame["last_event_id"] == cut_id] if frame is not None and isinstance(
            cut_id, str) else None
        seen = at if at is not None and len(at) else \
            frame[frame["last_event_time"] <= as_of] if frame is not None else None
        if seen is None or seen.empty:
            rows.append(dict(FEATURE_DEFAULTS))
        else:
            rows.append(seen.iloc[-1][list(FEATURE_NAMES)].to_dict())
    return pd.DataFrame(rows, columns=list(FEATURE_NAMES))


def entity_frame(requests: pd.DataFrame, session_features: pd.DataFrame) -> pd.DataFrame:
    """The requests as the training set's entity frame (a snapshot per request, cut at as_of)."""
    return pd.concat([pd.DataFrame({
        "snapshot_id": requests["request_id"].astype(str).to_numpy(),
        "session_id": requests["session_id"].to_numpy(),
        "user_id": requests["user_id"].to_numpy(),
        "product_id": requests["product_id"].to_numpy(),
        "event_timestamp": requests["as_of"].to_numpy(),
    }), session_features.reset_index(drop=True), pd.DataFrame({
        "label": np.zeros(len(requests), dtype=np.int64),
        "weight": np.ones(len(requests)),
        "date": requests["as_of"].dt.strftime("%Y-%m-%d").to_numpy(),
    })], axis=1)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _difference(served: Any, offline: Any) -> float | None:
    """0 when equal (both missing counts), a positive number when numbers differ, None when
    unequal values have no numeric difference (a string, or one side missing)."""
    if _missing(served) and _missing(offline):
        return 0.0
    if _missing(served) or _missing(offline):
        return None
    if isinstance(served, str) or isinstance(offline, str):
        return 0.0 if str(served) == str(offline) else None
    a, b = float(served), float(offline)
    gap = abs(a - b)
    return 0.0 if gap <= RELATIVE_TOLERANCE * max(1.0, abs(a), abs(b)) else gap


def compare(served: Sequence[dict], offline: pd.DataFrame, features: Sequence[str],
            late: Sequence[int] | None = None) -> pd.DataFrame:
    """Per feature: rows, mismatches, mismatch rate and mean absolute difference (over the rows
    where both sides are numbers), worst first; with `late` (per row, events that arrived after
    the answer, `late_events`), also the mismatches among the rows with none."""
    late = list(late) if late is not None else [0] * len(served)
    rows = []
    for name in features:
        gaps = [_difference(vector.get(name), value)
                for vector, value in zip(served, offline[name].tolist())]
        numeric = [g for g in gaps if g is not None]
        wrong = [g is None or g > 0 for g in gaps]
        mismatches = sum(wrong)
        rows.append({"feature": name, "view": FEATURE_VIEWS.get(name, "?"), "rows": len(gaps),
                     "mismatches": mismatches,
                     "mismatch_rate": mismatches / len(gaps) if gaps else float("nan"),
                     "mean_abs_diff": float(np.mean(numeric)) if numeric else float("nan"),
                     "mismatches_late_data": sum(w for w, n in zip(wrong, late) if n > 0)})
    table = pd.DataFrame(rows, columns=["feature", "view", "rows", "mismatches", "mismatch_rate",
                                        "mean_abs_diff", "mismatches_late_data"])
    on_time = sum(n == 0 for n in late)
    table["mismatch_rate_all_arrived"] = ((table["mismatches"] - table["mismatches_late_data"])
                                          / on_time if on_time else float("nan"))
    return table.sort_values(["mismatch_rate", "feature"], ascending=[False, True],
                             na_position="first").reset_index(drop=True)


def mismatch_verdict(table: pd.DataFrame, threshold: float) -> tuple[list[str], list[str]]:
    """The features over `threshold`, split by cause: (skew, late): `skew` when the mismatch rate
    among requests whose events had all arrived is over it (the implementation's own skew: an
    error), `late` when only the rate over all requests is (events that reached the stream after
    the answer: the data's timing, worth a warning, not a bug)."""
    skew = table["mismatch_rate_all_arrived"] > threshold
    late = (table["mismatch_rate"] > threshold) & ~skew
    return table.loc[skew, "feature"].tolist(), table.loc[late, "feature"].tolist()


def examples(served: Sequence[dict], offline: pd.DataFrame, requests: pd.DataFrame,
             features: Sequence[str], limit: int = 10) -> pd.DataFrame:
    """A few mismatching (request, feature) pairs with both values, to start a diagnosis."""
    rows = []
    for i, vector in enumerate(served):
        for name in features:
            gap = _difference(vector.get(name), offline[name].iloc[i])
            if gap is None or gap > 0:
                rows.append({"session_id": requests["session_id"].iloc[i],
                             "as_of": requests["as_of"].iloc[i].isoformat(), "feature": name,
                             "served": vector.get(name), "offline": offline[name].iloc[i]})
                if len(rows) >= limit:
                    return pd.DataFrame(rows)
    return pd.DataFrame(rows, columns=["session_id", "as_of", "feature", "served", "offline"])
