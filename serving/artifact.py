"""The model artifact on disk: five files in a directory, and the same five in its `model.tar.gz`.

- `booster.txt`: the LightGBM model (text format), which outputs a raw margin (log-odds);
- `calibrator.json`: margin -> probability (`serving.calibration`);
- `features.json`: the ordered features with kind, default and categories (`serving.vectorizer`);
- `manifest.json`: version, FeatureService, creation time, label, row counts, metrics, calibrator,
  hyperparameters;
- `explanations.json`: the TreeSHAP expected value and global importance (`serving.explainer`).

`model.tar.gz` holds the five files at its root (what SageMaker extracts into /opt/ml/model).
The version is a hash of what determines predictions, so equal models get equal versions.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import math
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from serving.calibration import Calibrator
from serving.vectorizer import Feature, Vectorizer

FORMAT_VERSION = 1
BOOSTER_FILE = "booster.txt"
CALIBRATOR_FILE = "calibrator.json"
FEATURES_FILE = "features.json"
MANIFEST_FILE = "manifest.json"
EXPLANATIONS_FILE = "explanations.json"
ARTIFACT_FILES = (BOOSTER_FILE, CALIBRATOR_FILE, FEATURES_FILE, MANIFEST_FILE, EXPLANATIONS_FILE)
TARBALL = "model.tar.gz"


def check_features(booster: lgb.Booster, features: Sequence[Feature]) -> Vectorizer:
    """The vectorizer of `features`; ValueError unless they are the booster's, in its order."""
    vectorizer = Vectorizer(features)
    if list(booster.feature_name()) != list(vectorizer.feature_names):
        raise ValueError("features.json does not match the booster's features: "
                         f"{list(vectorizer.feature_names)} vs {booster.feature_name()}")
    return vectorizer


def read_artifact(path: str | Path) -> dict[str, bytes]:
    """The five files' contents from an artifact directory or a `model.tar.gz`."""
    path = Path(path)
    if path.is_dir():
        blobs = {}
        for name in ARTIFACT_FILES:
            if not (path / name).is_file():
                raise FileNotFoundError(f"model artifact {path} lacks {name}")
            blobs[name] = (path / name).read_bytes()
        return blobs
    if path.is_file():
        return _read_tarball(path)
    raise FileNotFoundError(f"no model artifact at {path}")


def _read_tarball(path: Path) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar.getmembers():
            name = member.name[2:] if member.name.startswith("./") else member.name
            if member.isfile() and name in ARTIFACT_FILES:
                blobs[name] = tar.extractfile(member).read()
    missing = [n for n in ARTIFACT_FILES if n not in blobs]
    if missing:
        raise FileNotFoundError(f"model archive {path} lacks {missing} at its root")
    return blobs


@dataclass(frozen=True)
class SavedArtifact:
    directory: Path
    tarball: Path
    version: str


def content_version(blobs: Mapping[str, bytes]) -> str:
    """A version id from what determines predictions: booster, calibrator and features."""
    digest = hashlib.sha256()
    for name in (BOOSTER_FILE, CALIBRATOR_FILE, FEATURES_FILE):
        digest.update(name.encode())
        digest.update(blobs[name])
    return digest.hexdigest()[:12]


def save_artifact(directory: str | Path, *, booster: lgb.Booster, features: Sequence[Feature],
                  calibrator: Calibrator, manifest: Mapping | None = None,
                  explanations: Mapping | None = None, feature_service: str = "",
                  created_at: dt.datetime | None = None, versioned: bool = False
                  ) -> SavedArtifact:
    """Write the artifact's five files into `directory` and pack them as `model.tar.gz` there.

    With `versioned`, they go to `directory/<version>/` instead, so models never overwrite
    each other.

    The manifest gets `format_version`, `version` (a hash of booster, calibrator and features,
    so equal models get equal versions), `feature_service`, `created_at` and the feature names,
    on top of whatever `manifest` holds (label, rows, metrics, hyperparameters...).
    """
    directory = Path(directory)
    features = list(features)
    check_features(booster, features)  # before anything is written
    blobs = {
        BOOSTER_FILE: booster.model_to_string().encode("utf-8"),
        CALIBRATOR_FILE: _dumps(calibrator.to_json()),
        FEATURES_FILE: _dumps({"features": [f.to_json() for f in features]}),
    }
    version = content_version(blobs)
    if versioned:
        directory = directory / version
    directory.mkdir(parents=True, exist_ok=True)
    created = (created_at or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    full_manifest = {
        **dict(manifest or {}),
        "format_version": FORMAT_VERSION,
        "version": version,
        "feature_service": feature_service or (manifest or {}).get("feature_service", ""),
        "created_at": created.isoformat(),
        "features": [f.name for f in features],
        "calibrator": {**dict((manifest or {}).get("calibrator", {})),
                       "method": calibrator.method},
    }
    blobs[MANIFEST_FILE] = _dumps(full_manifest)
    blobs[EXPLANATIONS_FILE] = _dumps(dict(explanations or {}))
    for name in ARTIFACT_FILES:
        (directory / name).write_bytes(blobs[name])
    tarball = directory / TARBALL
    _write_tarball(tarball, blobs)
    return SavedArtifact(directory=directory, tarball=tarball, version=version)


def _dumps(obj: Any) -> bytes:
    return (json.dumps(_finite(obj), indent=2, allow_nan=False, default=_json_default)
            + "\n").encode("utf-8")


def _finite(obj: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers (an undefined metric is null)."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _write_tarball(path: Path, blobs: Mapping[str, bytes]) -> None:
    """A gzip tar of the files at its root, byte-identical for identical files (no mtimes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ARTIFACT_FILES:
            info = tarfile.TarInfo(name)
            info.size = len(blobs[name])
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(blobs[name]))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0,
                                               filename="") as gz:
        gz.write(raw.getvalue())
    tmp.replace(path)
