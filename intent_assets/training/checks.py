"""The publication gates as blocking checks on `calibrated_model` (the rules are in `gates`).

A model that fails any of them stops its run there; the publication sensor only ever sees
models whose gates (`GATES`) all passed.
"""

import json

import pandas as pd

from dagster import AssetCheckResult, AssetIn, asset_check

from intent_assets.reports.metrics import pr_auc
from intent_assets.training import gates as rules
from intent_assets.training.assets import LABEL, TIME_COLUMN, calibrated_model
from intent_assets.training.train import training_splits
from intent_resources.endpoint import ModelEndpointResource
from intent_resources.storage import ArtifactStore, LakeSlice
from serving.model import ModelArtifact


def _result(gate) -> AssetCheckResult:
    passed, metadata = gate
    return AssetCheckResult(passed=bool(passed),
                            metadata=json.loads(json.dumps(metadata, default=str)))


def champion_pr_auc(champion_path, candidate: dict, test: pd.DataFrame, training: pd.DataFrame):
    """PR-AUC of the model now serving, scored on the candidate's own test split.

    Both models are judged on the same rows; a champion measured on its own, older test split
    would not be comparable. None when nothing is served yet (or it is this very model).
    """
    if champion_path is None:
        return None
    champion = ModelArtifact.load(champion_path)
    if champion.version == candidate["version"]:
        return None
    rows = test[["snapshot_id"]].merge(training, on="snapshot_id", how="left")
    return pr_auc(rows[LABEL].to_numpy(), champion.predict(rows), rows["weight"].to_numpy())


@asset_check(asset=calibrated_model, blocking=True,
             additional_ins={"training_set": AssetIn(input_manager_key="io_manager")})
def pr_auc_gate(calibrated_model: dict, training_set: LakeSlice,
                model_endpoint: ModelEndpointResource, models: ArtifactStore) -> AssetCheckResult:
    """Test PR-AUC not worse than the serving champion's (same test rows) beyond a tolerance."""
    test = pd.read_parquet(models.local(calibrated_model["test_predictions"]))
    champion = champion_pr_auc(model_endpoint.served_model_path(), calibrated_model, test,
                               training_set.pandas())
    return _result(rules.pr_auc_gate(calibrated_model["metrics"]["pr_auc"], champion))


@asset_check(asset=calibrated_model, blocking=True)
def ece_gate(calibrated_model: dict, models: ArtifactStore) -> AssetCheckResult:
    """ECE ≤ 0.02 overall (or the test set's noise floor if higher), segments within bounds."""
    test = pd.read_parquet(models.local(calibrated_model["test_predictions"]))
    noise = rules.calibration_noise(test, calibrated_model["segments"])
    return _result(rules.ece_gate(calibrated_model["metrics"]["ece"],
                                  calibrated_model["segments"], noise=noise))


@asset_check(asset=calibrated_model, blocking=True,
             additional_ins={"logistic_baseline": AssetIn(input_manager_key="model_io_manager")})
def beats_logistic_gate(calibrated_model: dict, logistic_baseline: dict) -> AssetCheckResult:
    """The model's test PR-AUC beats logistic regression's on the same split."""
    return _result(rules.beats_baseline_gate(calibrated_model["metrics"]["pr_auc"],
                                       logistic_baseline["metrics"]["pr_auc"]))


@asset_check(asset=calibrated_model, blocking=True,
             additional_ins={"training_set": AssetIn(input_manager_key="io_manager")})
def no_leakage_gate(calibrated_model: dict, training_set: LakeSlice) -> AssetCheckResult:
    """No feature separates the classes almost perfectly or is named like an outcome."""
    train = training_splits(training_set.pandas(), LABEL, TIME_COLUMN).train
    return _result(rules.leakage_gate(rules.leakage_flags(train, calibrated_model["features"], LABEL,
                                              weight_column="weight")))


GATES = [pr_auc_gate, ece_gate, beats_logistic_gate, no_leakage_gate]
