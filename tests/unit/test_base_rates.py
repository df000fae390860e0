"""The base rates a model records at training are calibrated answers for requests scored without
a session: over another day's simulated sessions, each is within a few points of what happened."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from intent_assets.features.snapshots import build_snapshots
from intent_assets.ingest.simulator import SimulatorConfig, simulate_day
from intent_assets.training.train import base_rates
from streaming_jobs.contract import split_duplicates, validate_events

# 3,000 sessions a day: the interactions spread the prior, and at 1,500 one day's share of buying
# scoring moments moves by more than the 3 points asserted below from sampling alone.
CONFIG = SimulatorConfig(seed=11, sessions_per_day=3000, n_products=400)


def _day(day: dt.date) -> pd.DataFrame:
    """The day's training snapshots, every session labelled as the oracle knows it."""
    sim = simulate_day(CONFIG, day)
    events = split_duplicates(validate_events(sim.events).events).events
    oracle = sim.oracle_sessions
    sessions = pd.DataFrame({"session_id": oracle["session_id"],
                             "is_trainable": ~oracle["is_bot"],
                             "label": (oracle["outcome"] > 0).astype(int)})
    return build_snapshots(events, sessions)


@pytest.fixture(scope="module")
def days():
    return _day(dt.date(2026, 10, 13)), _day(dt.date(2026, 10, 14))


def test_recorded_base_rates_match_another_days_purchase_rates(days):
    train, later = days
    rates = base_rates(train, "label", "weight", "session_id")
    # a cold session (no state, no event) stands for a session the shop asks about
    observed_sessions = later.groupby("session_id")["label"].max().mean()
    assert rates["session"] == pytest.approx(observed_sessions, abs=0.03)
    # an answer at a scoring moment without the session (Redis down) stands for a cut
    assert rates["scoring_moment"] == pytest.approx(later["label"].mean(), abs=0.03)
    # and the two are different answers: a cut is more often in a buying session
    assert rates["scoring_moment"] > rates["session"] + 0.03


def test_base_rates_weigh_rows_and_count_each_session_once():
    table = pd.DataFrame({"session_id": ["a", "a", "a", "b", "c"], "label": [1, 1, 1, 0, 0],
                          "weight": [1.0, 1.0, 1.0, 1.0, 2.0]})
    rates = base_rates(table, "label", "weight", "session_id")
    assert rates == {"scoring_moment": pytest.approx(3 / 6), "session": pytest.approx(1 / 3)}
    assert base_rates(table, "label", None, None) == {"scoring_moment": pytest.approx(0.6),
                                                      "session": pytest.approx(0.6)}
