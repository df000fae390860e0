"""What the training chain hands between its steps: `TunedModel` (tuned and fitted, before
calibration, saved between the `tuned_model` and `calibrated_model` assets) and `TrainResult`
(what `train_model` / `finish_model` return: the artifact's place, its figures, and what the
report needs)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from intent_assets.training.calibration import CalibrationResult
from intent_assets.training.crossval import SMALL_TABLE_ROWS
from intent_assets.training.splits import Splits
from intent_assets.training.tuning import TuningResult, tuning_from_json, tuning_to_json
from serving.families import LIGHTGBM, LightGBMModel, load_family
from serving.model import Feature


@dataclass
class TunedModel:
    """A tuned, fitted model before calibration, with everything needed to finish it.

    `booster` is a LightGBM booster, or for another `family` its `serving.families` model.
    `validation_margin`: the best trial's margins on the validation split, from a model that
    learned from the train split only (what an ensemble's weights are fitted on).
    """

    booster: Any
    features: list[Feature]
    tuning: TuningResult
    params: dict
    label: str
    time_column: str | None
    group_column: str | None
    weight_column: str | None
    key_column: str | None
    feature_service: str
    seed: int
    backend: str
    rows: dict
    seconds: dict
    downsampling: dict
    dropped_columns: dict
    refit_on_validation: bool
    split_fingerprint: dict
    # "holdout" or "cross_validated"; the latter carries its folds and out-of-fold margins
    regime: str = "holdout"
    folds: dict = field(default_factory=dict)
    out_of_fold: pd.DataFrame | None = None
    small_table_rows: int = SMALL_TABLE_ROWS
    family: str = LIGHTGBM
    validation_margin: np.ndarray | None = None

    @property
    def model(self):
        """The fitted model behind the family interface (`serving.families`)."""
        return LightGBMModel(self.booster) if self.family == LIGHTGBM else self.booster

    def save(self, directory: str | Path) -> Path:
        """Write the model file(s), `tuned.json` (and `out_of_fold.parquet`) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, blob in self.model.blobs().items():
            (directory / name).write_bytes(blob)
        state = {name: getattr(self, name) for name in _TUNED_FIELDS}
        state["features"] = [f.to_json() for f in self.features]
        state["tuning"] = tuning_to_json(self.tuning)
        (directory / "tuned.json").write_text(json.dumps(state, indent=2, default=_plain))
        if self.out_of_fold is not None:
            self.out_of_fold.to_parquet(directory / "out_of_fold.parquet", index=False)
        if self.validation_margin is not None:
            np.save(directory / "validation_margin.npy", self.validation_margin)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TunedModel":
        directory = Path(directory)
        state = json.loads((directory / "tuned.json").read_text())
        family = state.get("family", LIGHTGBM)
        blobs = {f.name: f.read_bytes() for f in directory.iterdir() if f.is_file()}
        model = load_family(family, blobs)
        oof = directory / "out_of_fold.parquet"
        margin = directory / "validation_margin.npy"
        return cls(booster=model.booster if family == LIGHTGBM else model,
                   features=[Feature.from_json(f) for f in state.pop("features")],
                   tuning=tuning_from_json(state.pop("tuning")),
                   out_of_fold=pd.read_parquet(oof) if oof.exists() else None,
                   validation_margin=np.load(margin) if margin.exists() else None, **state)


_TUNED_FIELDS = ("params", "label", "time_column", "group_column", "weight_column", "key_column",
                 "feature_service", "seed", "backend", "rows", "seconds", "downsampling",
                 "dropped_columns", "refit_on_validation", "split_fingerprint", "regime",
                 "folds", "small_table_rows", "family")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


@dataclass(frozen=True)
class TrainResult:
    """Where the artifact went, what it scored, and everything the report needs."""

    artifact_dir: Path
    tar_path: Path
    version: str
    metrics: dict
    splits: Splits
    test_predictions: pd.DataFrame
    tuning: TuningResult
    calibration: CalibrationResult
    features: list[Feature]
    dropped_columns: dict[str, str]
    downsampling: dict
    seconds: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
