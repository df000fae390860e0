"""The model artifact on disk: five files in a directory, and the same five in its `model.tar.gz`.

- `booster.txt`: the LightGBM model (text format), which outputs a raw margin (log-odds);
- `calibrator.json`: margin -> probability (`serving.calibration`);
- `features.json`: the ordered features with kind, default and categories (`serving.vectorizer`);
- `manifest.json`: version, FeatureService, creation time, label, row counts, metrics, calibrator,
  hyperparameters;
- `explanations.json`: the TreeSHAP expected value and global importance (`serving.explainer`).

`model.tar.gz` holds the five files at its root (what SageMaker extracts into /opt/ml/model).
The version is a hash of what determines predictions, so equal models get equal versions.

Another model family (`serving.families`: XGBoost, CatBoost, random forest, MLP, an ensemble)
stores its own model file(s) in place of `booster.txt`; the manifest's `model_family` says which
(absent: LightGBM).
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
from serving.families import LIGHTGBM, model_blob_names
from serving.vectorizer import Feature, Vectorizer

FORMAT_VERSION = 1
BOOSTER_FILE = "booster.txt"
CALIBRATOR_FILE = "calibrator.json"
FEATURES_FILE = "features.json"
MANIFEST_FILE = "manifest.json"
EXPLANATIONS_FILE = "explanations.json"
ARTIFACT_FILES = (BOOSTER_FILE, CALIBRATOR_FILE, FEATURES_FILE, MANIFEST_FILE, EXPLANATIONS_FILE)
# what every family's artifact holds beside its model file(s)
COMMON_FILES = ARTIFACT_FILES[1:]
TARBALL = "model.tar.gz"
# an artifact holds a handful of small files; anything beyond this is not one
MAX_FILES = 64


def check_features(booster: lgb.Booster, features: Sequence[Feature]) -> Vectorizer:
    """The vectorizer of `features`; ValueError unless they are the booster's, in its order."""
    vectorizer = Vectorizer(features)
    if list(booster.feature_name()) != list(vectorizer.feature_names):
        raise ValueError("features.json does not match the booster's features: "
                         f"{list(vectorizer.feature_names)} vs {booster.feature_name()}")
    return vectorizer


def model_family(manifest: Mapping) -> str:
    """The family an artifact's manifest names (LightGBM when it names none)."""
    return str(manifest.get("model_family") or LIGHTGBM)


def read_artifact(path: str | Path) -> dict[str, bytes]:
    """Every file of an artifact directory or a `model.tar.gz` (its root), by name."""
    path = Path(path)
    if path.is_dir():
        blobs = {f.name: f.read_bytes() for f in sorted(path.iterdir())[:MAX_FILES]
                 if f.is_file() and f.name != TARBALL and not f.name.endswith(".tmp")}
        where = f"model artifact {path}"
    elif path.is_file():
        blobs = _read_tarball(path)
        where = f"model archive {path}"
    else:
        raise FileNotFoundError(f"no model artifact at {path}")
    missing = [n for n in COMMON_FILES if n not in blobs]
    if not missing:
        family = model_family(json.loads(blobs[MANIFEST_FILE]))
        missing = [n for n in model_blob_names(family, blobs) if n not in blobs] or \
            ([] if family != LIGHTGBM or BOOSTER_FILE in blobs else [BOOSTER_FILE])
    if missing:
        raise FileNotFoundError(f"{where} lacks {missing[0] if len(missing) == 1 else missing}"
                                + (" at its root" if path.is_file() else ""))
    return blobs


def _read_tarball(path: Path) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar.getmembers()[:MAX_FILES]:
            name = member.name[2:] if member.name.startswith("./") else member.name
            if member.isfile() and "/" not in name:
                blobs[name] = tar.extractfile(member).read()
    return blobs


@dataclass(frozen=True)
class SavedArtifact:
    directory: Path
    tarball: Path
    version: str


def content_version(blobs: Mapping[str, bytes], family: str = LIGHTGBM) -> str:
    """A version id from what determines predictions: model file(s), calibrator and features."""
    digest = hashlib.sha256()
    for name in (*model_blob_names(family, blobs), CALIBRATOR_FILE, FEATURES_FILE):
        digest.update(name.encode())
        digest.update(blobs[name])
    return digest.hexdigest()[:12]


def save_artifact(directory: str | Path, *, booster: lgb.Booster | None = None,
                  features: Sequence[Feature],
                  calibrator: Calibrator, manifest: Mapping | None = None,
                  explanations: Mapping | None = None, feature_service: str = "",
                  created_at: dt.datetime | None = None, versioned: bool = False,
                  model=None) -> SavedArtifact:
    """Write the artifact's five files into `directory` and pack them as `model.tar.gz` there.

    With `versioned`, they go to `directory/<version>/` instead, so models never overwrite
    each other.

    The manifest gets `format_version`, `version` (a hash of booster, calibrator and features,
    so equal models get equal versions), `feature_service`, `created_at` and the feature names,
    on top of whatever `manifest` holds (label, rows, metrics, hyperparameters...).
    `model` (a `serving.families` model) takes the place of `booster` for another family.
    """
    directory = Path(directory)
    features = list(features)
    family = LIGHTGBM if model is None else model.family
    if family == LIGHTGBM:
        booster = booster if model is None else model.booster
        check_features(booster, features)  # before anything is written
        blobs = {BOOSTER_FILE: booster.model_to_string().encode("utf-8")}
    else:
        blobs = dict(model.blobs())
    blobs[CALIBRATOR_FILE] = _dumps(calibrator.to_json())
    blobs[FEATURES_FILE] = _dumps({"features": [f.to_json() for f in features]})
    version = content_version(blobs, family)
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
        "model_family": family,
        "calibrator": {**dict((manifest or {}).get("calibrator", {})),
                       "method": calibrator.method},
    }
    blobs[MANIFEST_FILE] = _dumps(full_manifest)
    blobs[EXPLANATIONS_FILE] = _dumps(dict(explanations or {}))
    for name in blobs:
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
    order = [n for n in ARTIFACT_FILES if n in blobs] + sorted(set(blobs) - set(ARTIFACT_FILES))
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in order:
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
