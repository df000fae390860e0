"""The upsell's category preference: the ranking, the fitted weights on a planted preference, and
the ranking against popularity on the clickstream simulator."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from intent_assets.ingest.simulator_world import SimulatorConfig
from intent_assets.uplift.preference import (
    Cut,
    evaluate,
    fit_weights,
    report_markdown,
    train_preference,
)
from serving.preference import CategoryRanker, ndcg_at, recall_at, state_signals
from streaming_jobs.session_state import apply_event, new_state, to_dict

DAY = dt.date(2026, 10, 1)
# c0 is bought most often overall; c9 least
COUNTS = {f"c{i}": 100 - 10 * i for i in range(10)}
NAMES = {c: f"cat.{c}" for c in COUNTS}


def _prior(k: int = 3) -> CategoryRanker:
    return CategoryRanker.popularity(COUNTS, NAMES, k=k)


def test_without_a_session_signal_the_ranking_is_popularity_and_names_are_category_codes():
    ranker = _prior().with_weights(8.0, 1.0)
    assert ranker.rank({}, None) == ["c0", "c1", "c2"]
    assert ranker.recommend({}, None, k=2) == ["cat.c0", "cat.c1"]
    # a category the prior never saw is ranked (by its id) when the session is all about it
    assert ranker.recommend({"new": 3}, "new")[0] == "new"


def test_session_views_and_the_latest_category_lift_a_category_above_popular_ones():
    ranker = _prior().with_weights(8.0, 1.0)
    ranked = ranker.rank({"c7": 5, "c8": 1, "c0": 0}, "c8")
    assert ranked[0] == "c7" and len(ranked) == 3 and len(set(ranked)) == 3
    # popularity alone ignores the session
    assert _prior().rank({"c7": 5, "c8": 1}, "c8") == ["c0", "c1", "c2"]


def test_the_ranker_reads_its_signals_from_the_stored_session_state():
    state = new_state()
    for i, (etype, cat) in enumerate([("view", "c5"), ("view", "c5"), ("view", "c6"),
                                      ("cart", "c6")]):
        apply_event(state, {"session_id": "s", "event_id": f"e{i}", "event_type": etype,
                            "event_time": f"2026-10-01T10:00:0{i}Z", "product_id": f"p{cat}",
                            "category_id": cat, "price": 10.0})
    views, last = state_signals(json.loads(json.dumps(to_dict(state))))  # as Redis holds it
    assert views == {"c5": 2, "c6": 1} and last == "c6"
    assert state_signals(None) == ({}, None)


def test_recall_and_ndcg_at_k():
    assert recall_at(["a", "b", "c"], {"c", "d"}, 3) == 0.5
    assert recall_at(["a", "b", "c"], {"c", "d"}, 2) == 0.0
    assert ndcg_at(["a", "b"], {"a"}, 2) == 1.0
    assert ndcg_at(["b", "a"], {"a"}, 2) == pytest.approx(1 / np.log2(3))


def test_fitted_weights_on_a_planted_preference_beat_popularity():
    """Shoppers buy the category they viewed most, which is never a popular one: the fitted
    ranking finds it, popularity cannot."""
    rng = np.random.default_rng(0)
    cuts = []
    for i in range(400):
        wanted, other = rng.choice([f"c{j}" for j in range(5, 10)], 2, replace=False)
        views = {wanted: int(rng.integers(2, 6)), other: 1, "c0": int(rng.integers(0, 2))}
        cuts.append(Cut(DAY, f"s{i}", views, str(rng.choice([wanted, other])),
                        frozenset([wanted])))
    prior = _prior()
    w_views, w_last = fit_weights(prior, cuts[:200])
    assert w_views > 0
    ours = evaluate(prior.with_weights(w_views, w_last), cuts[200:])
    base = evaluate(prior, cuts[200:])
    assert ours["recall@3"].mean() == 1.0 and ours["ndcg@3"].mean() > 0.95
    assert base["recall@3"].mean() == 0.0


def test_the_preference_ranking_beats_popularity_on_the_simulator():
    report = train_preference(SimulatorConfig(sessions_per_day=3_000), DAY, train_days=2,
                              test_days=1, seed=0)
    assert report.test_cuts > 100
    for metric in ("recall@3", "ndcg@3", "recall@5", "ndcg@5"):
        diff, lower, _ = report.lift[metric]
        assert lower > 0, (metric, report.lift)
        assert report.metrics["preference"][metric] > report.metrics["popularity"][metric]
    assert "| recall@3 |" in report_markdown(report)
