"""The small-table regime: cross-validated tuning, out-of-fold calibration, the fold boosters
averaged into the shipped one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from intent_assets.training.calibration import calibrate
from intent_assets.training.crossval import choose_regime
from intent_assets.training.splits import stratified_folds, time_folds
from intent_assets.training.train import (
    development_rows,
    finish_model,
    fit_tuned,
    training_splits,
)
from intent_assets.training.table import design
from intent_assets.training.tuning import fit
from serving.model import Vectorizer
from tests.unit.test_model import generic_table, snapshot_table

TIME = "event_timestamp"


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return snapshot_table(n_sessions=600, seed=4)


@pytest.fixture(scope="module")
def tuned(table):
    return fit_tuned(table, "label", time_column=TIME, n_trials=2, seed=2)


def _refit(tuned, frame: pd.DataFrame):
    """A booster with the tuned parameters fitted on exactly `frame`."""
    return fit(tuned.params, design(Vectorizer(tuned.features), frame, tuned.label,
                                    tuned.weight_column, normalize=True))


def test_small_tables_in_time_are_cross_validated_and_refitted_on_every_non_test_row(table, tuned):
    splits = training_splits(table, "label", TIME)
    development = development_rows(splits)
    assert tuned.regime == "cross_validated"
    assert tuned.rows["fitted"] == tuned.rows["development"] == len(table) - len(splits.test)
    assert set(development["snapshot_id"]) == \
        set(table["snapshot_id"]) - set(splits.test["snapshot_id"])
    X = Vectorizer(tuned.features).frame(table)
    # forward folds never learn from their last block: the shipped booster is the one a fit on
    # all non-test rows gives, tree count from the folds
    assert tuned.booster.current_iteration() == tuned.tuning.best_iteration
    assert np.allclose(tuned.booster.predict(X, raw_score=True),
                       _refit(tuned, development).predict(X, raw_score=True), rtol=0, atol=1e-9)
    # and not the one the holdout regime would fit on 75 % of the rows
    holdout_rows = pd.concat([splits.train, splits.validation])
    assert not np.allclose(tuned.booster.predict(X, raw_score=True),
                           _refit(tuned, holdout_rows).predict(X, raw_score=True), atol=1e-6)


def test_stratified_folds_ship_the_average_of_the_fold_boosters():
    table = generic_table(n=1500, seed=8)
    tuned = fit_tuned(table, "bought", n_trials=1, seed=0)
    development = development_rows(training_splits(table, "bought", None)).reset_index(drop=True)
    folds = stratified_folds(development, "bought", None, seed=0)
    assert tuned.folds["method"] == "stratified"
    assert tuned.rows["fitted"] == len(development)
    X = Vectorizer(tuned.features).frame(table)
    # the margin is the mean of the fold boosters', each fitted on its fold's training rows with
    # the searched tree count: the models the calibrator's out-of-fold margins come from
    fold_margins = [_refit(tuned, development[folds.train_mask(k)]).predict(X, raw_score=True)
                    for k in range(folds.k)]
    assert tuned.booster.num_trees() == folds.k * tuned.tuning.best_iteration
    assert np.allclose(tuned.booster.predict(X, raw_score=True), np.mean(fold_margins, axis=0),
                       rtol=0, atol=1e-9)


def test_the_averaged_booster_explains_as_the_mean_of_the_fold_boosters(table, tuned):
    from intent_assets.training.ensemble import average_boosters

    development = development_rows(training_splits(table, "label", TIME)).reset_index(drop=True)
    folds = time_folds(development, TIME, "session_id")
    boosters = [_refit(tuned, development[folds.train_mask(k)]) for k in range(2)]
    X = Vectorizer(tuned.features).frame(table.head(50))
    average = average_boosters(boosters, tuned.tuning.best_iteration)
    again = type(average)(model_str=average.model_to_string())  # saved and loaded, as served
    expected = np.mean([b.predict(X, pred_contrib=True) for b in boosters], axis=0)
    assert np.allclose(again.predict(X, pred_contrib=True), expected, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="no boosters"):
        average_boosters([], 3)


def test_time_folds_run_forward_and_keep_sessions_whole(table):
    development = development_rows(training_splits(table, "label", TIME))
    folds = time_folds(development, TIME, "session_id")
    assert folds.method == "time" and folds.k == 5
    starts = development.groupby("session_id")[TIME].min()
    session_fold = pd.Series(folds.fold, index=development.index).groupby(
        development["session_id"].to_numpy()).agg(["min", "max"])
    assert (session_fold["min"] == session_fold["max"]).all()  # no session in two folds
    for k in range(folds.k):
        trained = development.loc[folds.train_mask(k), "session_id"].unique()
        validated = development.loc[folds.valid_mask(k), "session_id"].unique()
        assert len(trained) and len(validated) and not set(trained) & set(validated)
        # every session a fold model learns from started before any it is validated on
        assert starts[trained].max() < starts[validated].min()
    assert (folds.fold == -1).mean() == pytest.approx(0.5, abs=0.03)  # the first half: past only


def test_folds_without_time_are_stratified_and_keep_groups_whole(table):
    folds = stratified_folds(table, "label", "session_id", folds=5, seed=1)
    assert folds.method == "stratified" and set(folds.fold) == set(range(5))
    per_session = pd.Series(folds.fold).groupby(table["session_id"].to_numpy()).nunique()
    assert (per_session == 1).all()
    rate = table.groupby("session_id")["label"].max().mean()
    for k in range(5):
        assert not (folds.train_mask(k) & folds.valid_mask(k)).any()
        assert (folds.train_mask(k) | folds.valid_mask(k)).all()  # every other fold trains
        part = table[folds.valid_mask(k)]
        assert abs(part.groupby("session_id")["label"].max().mean() - rate) < 0.05


def test_calibration_is_fitted_on_out_of_fold_margins_only(table, tuned, tmp_path):
    splits = training_splits(table, "label", TIME)
    development = development_rows(splits).reset_index(drop=True)
    folds = time_folds(development, TIME, "session_id")
    oof = tuned.out_of_fold
    assert tuned.folds["method"] == "time"
    assert len(oof) == (folds.fold >= 0).sum() == tuned.rows["out_of_fold"]
    assert not set(oof["key"]) & set(splits.test["snapshot_id"])
    X = Vectorizer(tuned.features).frame(development)
    for k in range(folds.k):
        trained = development[folds.train_mask(k)]
        rows = oof[oof["fold"] == k]
        assert set(rows["key"]) == set(development.loc[folds.valid_mask(k), "snapshot_id"])
        assert not set(rows["key"]) & set(trained["snapshot_id"])
        # the margin is what a booster fitted on the fold's training rows alone gives
        fold_model = _refit(tuned, trained)
        by_key = pd.Series(fold_model.predict(X, raw_score=True),
                           index=development["snapshot_id"])
        assert np.allclose(rows["margin"], by_key.loc[rows["key"]], rtol=0, atol=1e-9)
    result = finish_model(tuned, table, tmp_path / "model", versioned=False)
    expected = calibrate(oof["margin"], oof["label"], oof["weight"], oof["group"])
    assert result.calibration.calibrator == expected.calibrator
    assert result.calibration.log_losses == expected.log_losses
    regime = result.manifest["regime"]
    assert regime["name"] == "cross_validated"
    assert regime["rows"] == {"tuning_folds": len(development), "calibration_out_of_fold": len(oof),
                              "final_fit": len(development), "test": len(splits.test)}
    assert regime["folds"]["folds"] == 5 and regime["folds"]["method"] == "time"
    assert result.metrics["test"]["rows"] == len(splits.test)


def test_the_test_split_is_untouched_by_tuning_and_calibration(table, tuned, tmp_path):
    test = training_splits(table, "label", TIME).test
    changed = table.copy()
    # the test rows' labels flipped and their features scrambled: nothing before the report moves
    changed.loc[test.index, "label"] = 1 - changed.loc[test.index, "label"]
    changed.loc[test.index, "session_intent_signal"] *= -3.0
    changed.loc[test.index, "session_device"] = "desktop"
    again = fit_tuned(changed, "label", time_column=TIME, n_trials=2, seed=2)
    assert again.params == tuned.params
    assert again.booster.model_to_string() == tuned.booster.model_to_string()
    pd.testing.assert_frame_equal(again.out_of_fold, tuned.out_of_fold)
    first = finish_model(tuned, table, tmp_path / "a", versioned=False)
    second = finish_model(again, changed, tmp_path / "b", versioned=False)
    assert first.calibration.calibrator == second.calibration.calibrator
    assert first.metrics["test"]["pr_auc"] != second.metrics["test"]["pr_auc"]


def test_above_the_threshold_the_holdout_regime_runs(table, tmp_path):
    big = fit_tuned(table, "label", time_column=TIME, n_trials=1, seed=2,
                    small_table_rows=len(table))
    assert big.regime == "holdout" and big.out_of_fold is None
    explicit = fit_tuned(table, "label", time_column=TIME, n_trials=1, seed=2, regime="holdout")
    assert big.booster.model_to_string() == explicit.booster.model_to_string()
    splits = training_splits(table, "label", TIME)
    assert {k: big.rows[k] for k in ("train", "validation", "calibration", "test")} == {
        name: len(part) for name, part in splits.items()}
    result = finish_model(big, table, tmp_path / "model", versioned=False)
    assert result.manifest["regime"]["name"] == "holdout"
    # calibrated on the calibration split's margins, as before
    calib = design(Vectorizer(big.features), splits.calibration, "label", "weight")
    expected = calibrate(big.booster.predict(calib.X, raw_score=True), calib.y, calib.w,
                         splits.calibration["session_id"].to_numpy())
    assert result.calibration.calibrator == expected.calibrator
    small = fit_tuned(table, "label", time_column=TIME, n_trials=1, seed=2,
                      small_table_rows=len(table) + 1)
    assert small.regime == "cross_validated"


def test_regime_choice():
    assert choose_regime(99_999) == "cross_validated"
    assert choose_regime(100_000) == "holdout"
    assert choose_regime(5_000, "holdout") == "holdout"
    assert choose_regime(5_000, backend="sagemaker") == "holdout"  # folds run in process only
    with pytest.raises(ValueError, match="optuna"):
        choose_regime(5_000, "cross_validated", backend="sagemaker")
    with pytest.raises(ValueError, match="regime"):
        choose_regime(5_000, "folds")


def test_a_table_without_time_or_groups_is_cross_validated_by_stratified_folds(tmp_path):
    table = generic_table(n=1500, seed=8)
    tuned = fit_tuned(table, "bought", n_trials=1, seed=0)
    assert tuned.regime == "cross_validated" and tuned.folds["method"] == "stratified"
    test = training_splits(table, "bought", None).test
    assert tuned.rows["fitted"] == len(table) - len(test)
    # every non-test row validated exactly once
    assert len(tuned.out_of_fold) == tuned.rows["fitted"]
    assert tuned.out_of_fold["key"].is_unique
    result = finish_model(tuned, table, tmp_path / "m", versioned=False)
    assert result.manifest["regime"]["rows"]["calibration_out_of_fold"] == tuned.rows["fitted"]
