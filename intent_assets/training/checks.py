"""The publication gates: blocking checks on `calibrated_model`.

A model that fails any of them stops its run there; the publication sensor only ever sees
models whose four gates passed.
"""

import json

from dagster import AssetCheckResult, AssetIn, asset_check

from intent_assets.reports import gates as rules
from intent_assets.training.assets import LABEL, TIME_COLUMN, calibrated_model
from intent_assets.training.train import training_splits
from intent_resources.storage import ArtifactStore, LakeSlice

PR_AUC_TOLERANCE = 0.01
MAX_ECE = 0.02
MAX_SEGMENT_ECE = 0.05


def _result(gate) -> AssetCheckResult:
    passed, metadata = gate
    return AssetCheckResult(passed=bool(passed),
                            metadata=json.loads(json.dumps(metadata, default=str)))


def champion_pr_auc(models: ArtifactStore):
    """Test PR-AUC of the model now serving, if one was published."""
    pointer = models.directory() / "champion.json"
    if not pointer.exists():
        return None
    return json.loads(pointer.read_text()).get("pr_auc")


@asset_check(asset=calibrated_model, blocking=True)
def pr_auc_gate(calibrated_model: dict, models: ArtifactStore) -> AssetCheckResult:
    """Test PR-AUC not worse than the champion's beyond the tolerance."""
    return _result(pr_auc_gate_rule(calibrated_model, models))


def pr_auc_gate_rule(model: dict, models: ArtifactStore):
    return rules.pr_auc_gate(model["metrics"]["pr_auc"], champion_pr_auc(models), PR_AUC_TOLERANCE)


@asset_check(asset=calibrated_model, blocking=True)
def ece_gate(calibrated_model: dict) -> AssetCheckResult:
    """ECE ≤ 0.02 overall, and every segment with enough data within bounds."""
    return _result(ece_gate_rule(calibrated_model))


def ece_gate_rule(model: dict):
    return rules.ece_gate(model["metrics"]["ece"], model["segments"], MAX_ECE, MAX_SEGMENT_ECE)


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
