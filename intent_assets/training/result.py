"""What `train_model` / `finish_model` return: the artifact's place, its figures, and what the
report needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from intent_assets.training.calibration import CalibrationResult
from intent_assets.training.splits import Splits
from intent_assets.training.tuning import TuningResult
from serving.model import Feature


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
