"""The challenger families: each trains, calibrates, saves and scores like LightGBM; the ensemble
learns its weights from the validation split only; the champion is the best gated candidate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from intent_assets.cli import main as intent_main
from intent_assets.training import champion
from intent_assets.training.challengers import (
    finish_candidate,
    fit_challengers,
    fit_ensemble,
    fit_ensemble_weights,
)
from intent_assets.training.families import CHALLENGERS
from intent_assets.training.train import fit_tuned, make_splits
from serving.families import ENSEMBLE
from serving.forest import ForestModel
from serving.model import ModelArtifact

T0 = pd.Timestamp("2026-10-01 00:00:00", tz="UTC")


def small_table(n_sessions: int = 700, seed: int = 3) -> pd.DataFrame:
    """Sessions cut at 1-3 moments; the label has an interaction (cart x desktop) and gaps."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sessions):
        intent = rng.normal()
        device = ("mobile", "desktop", "tablet")[rng.integers(0, 3)]
        history = rng.poisson(1.0) if rng.random() < 0.7 else np.nan
        carts = int(rng.random() < 1 / (1 + np.exp(-(intent - 0.3))))
        logit = -1.6 + 1.3 * intent + 1.2 * carts * (device == "desktop") \
            + (0.3 * history if history == history else -0.3)
        label = int(rng.random() < 1 / (1 + np.exp(-logit)))
        for k in range(int(rng.integers(1, 4))):
            rows.append({"snapshot_id": f"e{s}-{k}", "session_id": f"s{s}",
                         "event_timestamp": T0 + pd.Timedelta(seconds=60 * s + 20 * k),
                         "session_n_events": k + 1, "session_n_cart_adds": carts,
                         "session_intent_signal": intent + rng.normal(scale=0.5),
                         "session_device": device, "user_purchases_lifetime": history,
                         "label": label, "weight": 1.0})
    return pd.DataFrame(rows)


FIT = dict(time_column="event_timestamp", n_trials=1, seed=0, regime="holdout")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return small_table()


@pytest.fixture(scope="module")
def tuned(table):
    lightgbm = fit_tuned(table, "label", **FIT)
    return fit_challengers(table, "label", CHALLENGERS, lightgbm=lightgbm, **FIT)


@pytest.fixture(scope="module")
def finished(tuned, table, tmp_path_factory):
    out = tmp_path_factory.mktemp("families")
    return {family: finish_candidate(t, table, out / family, versioned=False)
            for family, t in tuned.items()}


def test_every_family_and_the_ensemble_is_tuned_on_the_same_splits_and_features(tuned):
    assert set(tuned) == {"lightgbm", *CHALLENGERS, ENSEMBLE}
    lightgbm = tuned["lightgbm"]
    for family, model in tuned.items():
        assert model.family == family
        assert model.split_fingerprint == lightgbm.split_fingerprint
        assert [f.name for f in model.features] == [f.name for f in lightgbm.features]
        if family != ENSEMBLE:
            assert len(model.tuning.history) == 1  # the same budget of trials


def test_each_family_saves_an_artifact_that_reloads_and_scores_with_reasons(finished, table):
    rows = table.head(20)
    for family, candidate in finished.items():
        artifact = ModelArtifact.load(candidate.result.tar_path)
        assert artifact.family == family and artifact.manifest["model_family"] == family
        shipped = candidate.result.test_predictions["probability"].to_numpy()
        test = candidate.result.test_predictions
        np.testing.assert_allclose(artifact.predict(test), shipped, atol=1e-9)
        p = artifact.predict(rows)
        assert ((p > 0) & (p < 1)).all()
        one = artifact.score_one(rows.iloc[0].to_dict(), top_k=3)
        assert one.probability == pytest.approx(p[0], abs=1e-9)
        assert len(one.reasons) == 3 and all("feature" in r for r in one.reasons)
        assert candidate.latency_ms["p50"] > 0 and candidate.artifact_bytes > 0
        assert artifact.explanations["importance"]


@pytest.mark.parametrize("family", ["xgboost", "catboost", "random_forest"])
def test_tree_family_reasons_sum_to_the_raw_margin(finished, table, family):
    artifact = ModelArtifact.load(finished[family].result.artifact_dir)
    X = artifact.vectorize(table.head(50))
    np.testing.assert_allclose(artifact.contributions(X).sum(axis=1), artifact.predict_raw(X),
                               atol=1e-4)


def test_the_numpy_forest_scores_as_scikit_learn_does(table):
    from sklearn.ensemble import RandomForestClassifier

    X = table[["session_n_events", "session_intent_signal", "user_purchases_lifetime"]].to_numpy(
        dtype=float)
    forest = RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0).fit(
        X, table["label"])
    model = ForestModel.from_sklearn(forest)
    p = 1 / (1 + np.exp(-model.raw(X)))
    np.testing.assert_allclose(p, np.clip(forest.predict_proba(X)[:, 1], 1e-6, 1 - 1e-6),
                               atol=1e-9)


def test_ensemble_weights_come_from_the_validation_split_only(tuned, table):
    ensemble = tuned[ENSEMBLE]
    record = ensemble.booster.record
    splits = make_splits(table, "label", "event_timestamp", "session_id", 0)
    assert record["weights_fitted_on"] == "validation"
    assert record["validation_rows"] == len(splits.validation)
    # the test split's labels flipped: the same weights; validation's flipped: others
    members = {f: t for f, t in tuned.items() if f != ENSEMBLE}
    flipped_test = table.copy()
    at_test = flipped_test["snapshot_id"].isin(splits.test["snapshot_id"])
    flipped_test.loc[at_test, "label"] = 1 - flipped_test.loc[at_test, "label"]
    assert fit_ensemble(members, flipped_test).booster.record["weights"] == record["weights"]
    flipped_valid = table.copy()
    at_valid = flipped_valid["snapshot_id"].isin(splits.validation["snapshot_id"])
    flipped_valid.loc[at_valid, "label"] = 1 - flipped_valid.loc[at_valid, "label"]
    assert fit_ensemble(members, flipped_valid).booster.record["weights"] != record["weights"]


def test_ensemble_weights_favour_the_informative_member():
    rng = np.random.default_rng(0)
    z = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-2 * z))).astype(float)
    weights = fit_ensemble_weights({"good": z, "noise": rng.normal(size=4000)}, y)
    assert weights["good"] == pytest.approx(2.0, rel=0.15)
    assert weights["noise"] < 0.1 and min(weights.values()) >= 0


def _candidate(family, pr_auc, ece_ok=True, beats=True, p50=0.2):
    return {"family": family, "version": family, "metrics": {"pr_auc": pr_auc, "ece": 0.01},
            "latency_ms": {"p50": p50, "p99": p50},
            "gates": {"ece_gate": (ece_ok, {}), "beats_logistic_gate": (beats, {}),
                      "latency_gate": champion.latency_gate({"p50": p50, "p99": p50})}}


def test_the_champion_is_the_best_candidate_that_passes_every_gate():
    candidates = [_candidate("lightgbm", 0.60), _candidate("xgboost", 0.65, ece_ok=False),
                  _candidate("catboost", 0.70, p50=25.0), _candidate("mlp", 0.62),
                  _candidate("random_forest", 0.64, beats=False)]
    assert champion.choose(candidates) == 3
    rows = champion.comparison_rows(candidates, 3)
    assert [r["family"] for r in rows if r["champion"]] == ["mlp"]
    assert rows[2]["failed_gates"] == "latency_gate" and not rows[2]["eligible"]
    assert champion.choose([_candidate("lightgbm", 0.6, ece_ok=False)]) is None


def test_intent_train_families_compares_and_writes_the_gated_winner(table, tmp_path, capsys):
    path = tmp_path / "table.parquet"
    table.to_parquet(path)
    out = tmp_path / "model"
    code = intent_main(["train", "--table", str(path), "--label", "label", "--time-column",
                        "event_timestamp", "--trials", "1", "--regime", "holdout",
                        "--families", "lightgbm,xgboost,random_forest", "--out", str(out)])
    summary = json.loads(capsys.readouterr().out)
    families = [row["family"] for row in summary["candidates"]]
    assert families == ["lightgbm", "xgboost", "random_forest", ENSEMBLE]
    winners = [row for row in summary["candidates"] if row["champion"]]
    assert code == 0 and len(winners) == 1 and winners[0]["eligible"]
    assert winners[0]["pr_auc"] == max(r["pr_auc"] for r in summary["candidates"]
                                       if r["eligible"])
    assert ModelArtifact.load(out).family == summary["champion"] == winners[0]["family"]
    assert intent_main(["train", "--table", str(path), "--label", "label", "--families",
                        "lightgbm,svm", "--out", str(out)]) == 2
    assert "unknown model families ['svm']" in capsys.readouterr().err
