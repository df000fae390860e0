"""Training examples: sessions cut at scoring moments, with the session features as of each cut.

An example is a session seen up to a decision point (DESIGN, "Scoring moments"); its features
come from `streaming_jobs.session_state.replay`, the code the streaming job runs, as the state
after the cut event. The label is the session's (a purchase in it or within the grace window);
every cut precedes the first purchase, so the label is about what happens after the cut.

Sampling never looks past a cut: a cut is kept when blake2b(seed, event_id) falls under
`keep_rate` and fewer than `max_per_session` of its session's cuts were kept before it, both
known to a live scorer at that moment. Rows weigh 1 (`weight`) and carry nothing derived from
how many cuts a session ends up with, which depends on whether it buys (docs/model.md).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from intent_resources.project_config import ProjectConfig, parse_scoring_moments
from streaming_jobs.session_state import FEATURE_NAMES, replay

# (event_type, page_type it must have, or None for any): the moments the site asks for a score,
# by default the project configuration's (`scoring_moments`; the snapshots asset passes its own).
SCORING_MOMENTS: tuple[tuple[str, str | None], ...] = parse_scoring_moments(
    ProjectConfig.scoring_moments)

SNAPSHOT_COLUMNS: tuple[str, ...] = (
    "snapshot_id", "session_id", "user_id", "product_id", "category_id", "event_timestamp",
    *FEATURE_NAMES, "label", "weight", "date",
)

# Defaults: about half the scoring moments, at most 10 per session, so a long browse cannot
# crowd out the rest of the data.
KEEP_RATE = 0.5
MAX_PER_SESSION = 10


def scoring_moment_mask(event_type: pd.Series, page_type: pd.Series,
                        moments: tuple[tuple[str, str | None], ...] = SCORING_MOMENTS) -> pd.Series:
    """True where an event is one of `moments` by event type (and page type where given)."""
    mask = pd.Series(False, index=event_type.index)
    for etype, page in moments:
        hit = event_type == etype
        if page is not None:
            hit &= page_type == page
        mask |= hit.fillna(False).astype(bool)
    return mask


def cut_hash(event_ids, seed: int) -> np.ndarray:
    """A stable pseudo-random uint64 per event id under `seed` (same on every machine and run)."""
    key = str(int(seed)).encode()
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(e.encode(), digest_size=8, key=key).digest(), "big")
         for e in event_ids),
        dtype=np.uint64, count=len(event_ids))


# state-row names -> snapshot names
_RENAMES = {"last_event_id": "snapshot_id", "last_product_id": "product_id",
            "last_category_id": "category_id", "last_event_time": "event_timestamp"}


def _as_snapshots(states: pd.DataFrame, label) -> pd.DataFrame:
    out = states.rename(columns=_RENAMES)
    out = out.assign(
        label=np.asarray(label, dtype=np.int64),
        weight=np.ones(len(out), dtype=np.float64),
        date=out["event_timestamp"].dt.strftime("%Y-%m-%d").astype(object).to_numpy(),
    )
    return out[list(SNAPSHOT_COLUMNS)].reset_index(drop=True)


def empty_snapshots() -> pd.DataFrame:
    """No snapshots, with the columns and dtypes of real ones."""
    nothing = pd.DataFrame({"session_id": [], "event_id": [], "event_type": [],
                            "event_time": pd.Series([], dtype="datetime64[us, UTC]")})
    return _as_snapshots(replay(nothing), [])


def build_snapshots(events: pd.DataFrame, sessions: pd.DataFrame,
                    max_per_session: int = MAX_PER_SESSION, seed: int = 0,
                    keep_rate: float = KEEP_RATE,
                    moments: tuple[tuple[str, str | None], ...] = SCORING_MOMENTS) -> pd.DataFrame:
    """One row per kept scoring moment of each trainable session: features as of the cut, label.

    `events` are contract rows without duplicate event_ids, holding every event of the sessions
    to snapshot (a session that crosses midnight needs both days); cuts are the events that
    are one of `moments` (event_type, page_type or None). `sessions` needs
    `session_id`, `is_trainable` and `label`. Rows come sorted by (session_id, event_timestamp,
    snapshot_id).
    """
    if max_per_session < 1:
        raise ValueError(f"max_per_session must be at least 1, got {max_per_session}")
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    trainable = sessions.loc[sessions["is_trainable"].eq(True).to_numpy(),
                             ["session_id", "label"]]
    if trainable["session_id"].duplicated().any():
        raise ValueError("sessions has duplicate session_id rows")
    if trainable["label"].isna().any():
        raise ValueError("trainable sessions without a label")
    events = events[events["session_id"].isin(trainable["session_id"])]
    if events["event_id"].duplicated().any():
        raise ValueError("events hold duplicate event_ids; deduplicate them first")
    if events.empty:
        return empty_snapshots()
    return snapshots_from_states(replay(events), events, trainable.set_index("session_id")["label"],
                                 max_per_session, seed, keep_rate, moments)


def snapshots_from_states(states: pd.DataFrame, events: pd.DataFrame, labels: pd.Series,
                          max_per_session: int, seed: int, keep_rate: float,
                          moments: tuple[tuple[str, str | None], ...] = SCORING_MOMENTS
                          ) -> pd.DataFrame:
    """The kept cuts among `replay(events)`'s rows, for the sessions `labels` (by session_id) names.

    `states` may hold other sessions too (they are left out): a session's rows depend on its own
    events only, so replaying more sessions at once changes none of them.
    """
    states = states[states["session_id"].isin(labels.index)]
    page_type = (events["page_type"] if "page_type" in events
                 else pd.Series(None, index=events.index, dtype=object))
    is_cut = scoring_moment_mask(events["event_type"], page_type, moments)
    cut_ids = events.loc[is_cut, "event_id"].astype(str).to_numpy()
    # A state row is a cut when its event is a scoring moment and no purchase came before or
    # with it (has_purchased counts the event itself, so the purchase event is never a cut).
    cuts = states[states["last_event_id"].isin(cut_ids)
                  & (states["session_has_purchased"] == 0)]
    if cuts.empty:
        return empty_snapshots()

    # Both tests look only at the cut and the cuts before it (see the module docstring).
    draw = cut_hash(cuts["last_event_id"].tolist(), seed) / np.float64(2.0 ** 64)
    thinned = cuts[draw < keep_rate].sort_values(["session_id", "last_event_time", "last_event_id"],
                                                 kind="stable")
    kept = thinned[thinned.groupby("session_id", sort=False).cumcount() < max_per_session]
    return _as_snapshots(kept, kept["session_id"].map(labels))


def closed_from_states(states: pd.DataFrame) -> pd.DataFrame:
    """Each session's feature row after its last event, timestamped by that event."""
    if states.empty:
        return pd.DataFrame(columns=["session_id", "event_timestamp", *FEATURE_NAMES])
    last = states.groupby("session_id", sort=True).tail(1)
    return (last.assign(event_timestamp=last["last_event_time"])
            [["session_id", "event_timestamp", *FEATURE_NAMES]].reset_index(drop=True))


def closed_session_features(events: pd.DataFrame) -> pd.DataFrame:
    """Each session's feature row after its last event, timestamped by that event."""
    if events.empty:
        return closed_from_states(pd.DataFrame())
    return closed_from_states(replay(events))


def day_snapshots(events: pd.DataFrame, sessions: pd.DataFrame, day: str,
                  max_per_session: int = MAX_PER_SESSION, seed: int = 0,
                  keep_rate: float = KEEP_RATE,
                  moments: tuple[tuple[str, str | None], ...] = SCORING_MOMENTS
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One day's (snapshots, closed-session features) in one process: the sessions starting on
    `day` (sessions' `date`), from `events` holding at least all of their events.

    The reference the Spark path (`spark_snapshots.session_outputs`) is tested against.
    """
    day_sessions = sessions[sessions["date"] == day]
    day_events = events[events["session_id"].isin(day_sessions["session_id"])]
    day_events = day_events.drop(columns="date", errors="ignore")
    return (build_snapshots(day_events, day_sessions, max_per_session, seed, keep_rate, moments),
            closed_session_features(day_events))
