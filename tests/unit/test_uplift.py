"""Uplift: the simulator's known truth, the DR-learner, the Qini metrics, the budgeted policy and
the exploration slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from intent_assets.uplift.evaluate import auuc_and_qini, captured_share
from intent_assets.uplift.learn import fit_dr_learner
from intent_assets.uplift.simulator import draw_outcomes, exploration_log, simulate_sessions
from intent_assets.uplift.train import train_uplift_model
from serving.offers import ExplorationSlice, OfferChooser
from serving.policy import ACTIONS, PolicyParams, decide
from serving.uplift import (
    EFFECTS,
    UPLIFT_FEATURES,
    UpliftModel,
    choose_with_budget,
    incremental_margins,
)


@pytest.fixture(scope="module")
def sessions() -> pd.DataFrame:
    return simulate_sessions(40_000, seed=3)


def test_each_trait_responds_to_the_discount_as_its_name_says(sessions):
    uplift = sessions.groupby("trait")["true_uplift_discount"]
    assert (uplift.min()["persuadable"] > 0) and uplift.mean()["persuadable"] > 0.15
    assert uplift.max()["sleeping_dog"] < 0
    assert abs(uplift.mean()["sure_thing"]) < 0.03 and abs(uplift.mean()["lost_cause"]) < 0.01
    # the truth is per session: the same trait's uplift varies with the observable signals
    assert sessions[sessions["trait"] == "persuadable"]["true_uplift_discount"].std() > 0.02
    # the observables tell the traits apart only in part: E[uplift | x] is a coarser truth
    corr = np.corrcoef(sessions["expected_uplift_discount"], sessions["true_uplift_discount"])[0, 1]
    assert 0.3 < corr < 0.95


def test_outcomes_are_drawn_from_each_actions_true_probability(sessions):
    for action in ("none", "discount", "upsell"):
        outcome = draw_outcomes(sessions, np.full(len(sessions), action), seed=5)
        expected = sessions[f"p_{action}"].mean()
        se = np.sqrt(expected * (1 - expected) / len(sessions))
        assert abs(outcome["converted"].mean() - expected) < 4 * se, action
    discounted = draw_outcomes(sessions, np.full(len(sessions), "discount"), seed=5)
    assert np.allclose(discounted["discount_given"], 0.10 * discounted["revenue"])


def test_the_dr_learner_recovers_a_planted_effect():
    rng = np.random.default_rng(0)
    n = 24_000
    x = rng.standard_normal((n, 3))
    base = 0.2 + 0.1 * (x[:, 1] > 0)
    planted = np.where(x[:, 0] > 0, 0.25, 0.0)   # the discount helps only where x0 > 0
    actions = rng.choice(np.array(["none", "discount", "upsell"], dtype=object), n)
    p = base + np.where(actions == "discount", planted, 0.0)
    converted = (rng.random(n) < p).astype(float)
    revenue = converted * 50.0
    boosters = fit_dr_learner(x, converted, revenue, actions, np.full(n, 1 / 3), ["a", "b", "c"],
                              folds=2, seed=1, rounds=60)
    assert set(boosters) == set(EFFECTS)
    test = rng.standard_normal((4000, 3))
    effect = boosters["conversion:discount"].predict(test)
    truth = np.where(test[:, 0] > 0, 0.25, 0.0)
    assert abs(effect[truth > 0].mean() - 0.25) < 0.04
    assert abs(effect[truth == 0].mean()) < 0.04
    assert np.corrcoef(effect, truth)[0, 1] > 0.8
    # the upsell was planted with no effect
    assert abs(boosters["conversion:upsell"].predict(test).mean()) < 0.04
    assert abs(boosters["revenue:discount"].predict(test)[truth > 0].mean() - 12.5) < 2.5


def test_the_dr_learner_refuses_a_log_without_probabilities_or_arms():
    x = np.zeros((30, 1))
    actions = np.array(["none", "discount"] * 15, dtype=object)
    with pytest.raises(ValueError, match="no randomized sessions"):
        fit_dr_learner(x, np.zeros(30), np.zeros(30), actions, np.full(30, 0.5), ["a"])
    with pytest.raises(ValueError, match="probabilities"):
        fit_dr_learner(x, np.zeros(30), np.zeros(30), actions, np.zeros(30), ["a"])


def test_qini_ranks_a_perfect_score_above_a_random_one(sessions):
    rng = np.random.default_rng(1)
    treated = rng.random(len(sessions)) < 0.5
    outcome = draw_outcomes(sessions, np.where(treated, "discount", "none"), seed=2)["converted"]
    truth = sessions["true_uplift_discount"].to_numpy()
    _, perfect = auuc_and_qini(truth, treated, outcome)
    _, shuffled = auuc_and_qini(rng.permutation(truth), treated, outcome)
    assert perfect > 0.01 > abs(shuffled)
    assert np.allclose(captured_share(truth, truth), 1.0)
    assert captured_share(-truth, truth)[1] < 0


@pytest.fixture(scope="module")
def model() -> UpliftModel:
    return train_uplift_model(exploration_log(20_000, seed=4), seed=0, rounds=60,
                              bootstrap_reps=20)[0]


@pytest.mark.parametrize("budget", [0.05, 0.2, 0.5])
def test_the_uplift_policy_respects_the_discount_budget(model, budget):
    fresh = simulate_sessions(20_000, seed=9)
    params = PolicyParams(discount_budget=budget)
    margins = incremental_margins(model.predict(model.matrix(fresh)), params)
    exact = choose_with_budget(margins, budget)
    assert (exact == "discount").mean() <= budget
    # the served threshold, set on the training sample, holds on new sessions up to sampling
    served = np.array([model.decide(row, row["propensity"], params).action
                       for row in fresh.head(1500).to_dict("records")])
    assert (served == "incentivize").mean() <= budget + 3 * np.sqrt(budget / 1500)
    # only the budget binds: the actions it leaves alone are the best by incremental margin
    best = np.array(["none", "discount", "upsell"])[np.argmax(np.column_stack(
        [margins["none"], margins["discount"], margins["upsell"]]), axis=1)]
    assert np.all((exact == best) | (best == "discount"))


def test_the_single_row_fast_path_equals_the_batch_prediction(model, sessions, tmp_path):
    loaded = UpliftModel.load(model.save(tmp_path / "m"))
    rows = sessions.head(50)
    batch = loaded.predict(loaded.matrix(rows))
    for i, row in enumerate(rows.to_dict("records")):
        single = loaded.predict_row(row, row["propensity"])
        for effect in EFFECTS:
            assert single[effect] == pytest.approx(batch[effect][i], rel=1e-9, abs=1e-12)
    assert loaded.features == UPLIFT_FEATURES


def test_the_exploration_slice_is_randomized_with_logged_probabilities():
    slice_ = ExplorationSlice(share=0.2, salt="explore-1")
    ids = [f"session-{i}" for i in range(60_000)]
    drawn = [slice_.assignment(s) for s in ids]
    inside = [d for d in drawn if d is not None]
    assert abs(len(inside) / len(ids) - 0.2) < 0.01
    counts = pd.Series([a for a, _ in inside]).value_counts().reindex(ACTIONS)
    assert sps.chisquare(counts.to_numpy()).pvalue > 0.001
    assert {p for _, p in inside} == {1 / 3}
    assert drawn[:100] == [slice_.assignment(s) for s in ids[:100]]   # stable per session
    # independent of what the models see: the same session ids, whatever the features say
    chooser = OfferChooser(exploration=slice_)
    offers = [chooser.decide("u", s, {"session_cart_items": 3}, p, None)
              for s, p in zip(ids[:3000], np.linspace(0, 1, 3000))]
    explored = [o for o in offers if o.policy == "exploration"]
    assert all(o.fields == {"exploration": True, "assignment_probability": 1 / 3} for o in explored)
    assert [o.decision.action for o in explored] == [
        a for a, _ in (d for d in drawn[:3000] if d is not None)]
    # a new salt draws a new slice
    other = ExplorationSlice(share=0.2, salt="explore-2")
    assert sum((slice_.assignment(s) is None) != (other.assignment(s) is None)
               for s in ids[:5000]) > 500


def test_uplift_arm_without_a_model_falls_back_to_the_bands_flagged():
    chooser = OfferChooser(default_policy="uplift")
    offer = chooser.decide("u", "s", {}, 0.3, None)
    assert offer.policy == "model" and offer.fallbacks == ("uplift_unavailable",)
    with pytest.raises(ValueError):
        ExplorationSlice(share=1.5)


def test_a_base_rate_answer_is_left_alone_whatever_the_slice_or_arm():
    # an on-the-fence base rate acted on would send every shopper the discount in an outage
    params = PolicyParams()
    fence = 0.3
    assert decide(fence, params).action == "incentivize"
    chooser = OfferChooser(params=params, exploration=ExplorationSlice(share=1.0),
                           default_policy="uplift")
    for session in ("s1", "s2", "s3", "s4"):
        offer = chooser.decide("u", session, {"session_cart_items": 3}, fence, None,
                               informed=False)
        assert (offer.decision.action, offer.policy, offer.fields) == \
            ("leave_alone", "base_rate", {})
        assert offer.decision.band == decide(fence, params).band
    # the same answer, informed, is explored as the slice draws it
    assert {chooser.decide("u", f"s{i}", {}, fence, None).policy for i in range(20)} == \
        {"exploration"}
