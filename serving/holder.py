"""The model a server is using right now, swapped atomically when a new one is published.

A `ModelHolder` loads an artifact from a source (a `model.tar.gz`, an artifact directory, or a
directory holding a `model.tar.gz`, as SageMaker's /opt/ml/model or the local endpoint's model
dir), and reloads it on demand or when the source changes on disk. A reload loads and warms the
new model completely before one attribute assignment makes it current, so a request sees either
the old model or the new one, never a half-loaded one, and a model that fails to load leaves the
old one serving.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from serving.model import BOOSTER_FILE, MANIFEST_FILE, TARBALL, ModelArtifact

log = logging.getLogger(__name__)


def resolve_source(path: str | Path) -> Path:
    """The file or directory to load: a directory's `model.tar.gz` wins over loose files.

    The published archive is what a local publication replaces; loose files are what SageMaker
    extracts it into (and what training writes beside it).
    """
    path = Path(path)
    if path.is_dir() and (path / TARBALL).is_file():
        return path / TARBALL
    return path


def source_signature(path: str | Path) -> tuple | None:
    """What changes when a model source is replaced: (inode, size, mtime) of its key files."""
    source = resolve_source(path)
    # a directory's manifest names its version, which every family's model file(s) change
    files = [source] if not source.is_dir() else \
        [f for f in (source / BOOSTER_FILE, source / MANIFEST_FILE)
         if f.name == MANIFEST_FILE or f.exists()]
    try:
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in (os.stat(f) for f in files))
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class LoadedModel:
    """An artifact with where it came from and when."""

    artifact: ModelArtifact
    source: Path
    signature: tuple | None
    loaded_at: float

    @property
    def version(self) -> str:
        return self.artifact.version


def load_model(path: str | Path, check: Callable[[ModelArtifact], None] | None = None
               ) -> LoadedModel:
    """Load and warm a model (the first single-row score sets LightGBM's fast path up); `check`
    may refuse it (raise) before it is warmed."""
    source = resolve_source(path)
    signature = source_signature(path)
    artifact = ModelArtifact.load(source)
    if check is not None:
        check(artifact)
    warm = {f.name: f.default for f in artifact.features}
    artifact.score_one(warm, top_k=1)
    return LoadedModel(artifact, source, signature, time.time())


class ModelHolder:
    """The current model of a server; `reload` swaps in a new one without a gap."""

    def __init__(self, path: str | Path | None, on_swap: Callable[[LoadedModel], None] | None = None,
                 check: Callable[[ModelArtifact], None] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._check = check
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()  # one reload at a time; readers never take it
        self._on_swap = on_swap
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def artifact(self) -> ModelArtifact | None:
        current = self._current
        return current.artifact if current is not None else None

    def reload(self, path: str | Path | None = None) -> LoadedModel:
        """Load the model at `path` (default: this holder's path) and make it current.

        Raises if it cannot be loaded; the previous model then stays current.
        """
        with self._lock:
            if path is not None:
                self.path = Path(path)
            if self.path is None:
                raise FileNotFoundError("no model path configured")
            try:
                loaded = load_model(self.path, self._check)
            except Exception as error:
                self.last_error = f"{type(error).__name__}: {error}"
                raise
            self._current = loaded
            self.last_error = None
        if self._on_swap is not None:
            self._on_swap(loaded)
        log.info("model %s loaded from %s", loaded.version, loaded.source)
        return loaded

    def try_load(self) -> LoadedModel | None:
        """Load the model if one is there; None (with `last_error` set) if not."""
        try:
            return self.reload()
        except Exception as error:  # the server starts and serves fallbacks without a model
            log.warning("no model loaded from %s: %s", self.path, error)
            return None

    def changed(self) -> bool:
        """Whether the source on disk differs from what is loaded."""
        if self.path is None:
            return False
        signature = source_signature(self.path)
        if signature is None:
            return False
        current = self._current
        return current is None or current.signature != signature

    def watch(self, interval_s: float = 1.0) -> None:
        """Reload in a background thread whenever the source changes on disk."""
        if self._watcher is not None or interval_s <= 0:
            return

        def loop() -> None:
            failed_signature = None
            while not self._stop.wait(interval_s):
                if not self.changed():
                    continue
                signature = source_signature(self.path)
                if signature == failed_signature:
                    continue  # do not retry a broken file until it changes again
                try:
                    self.reload()
                    failed_signature = None
                except Exception as error:
                    failed_signature = signature
                    log.error("model reload from %s failed; still serving %s: %s", self.path,
                              self._current.version if self._current else None, error)

        self._watcher = threading.Thread(target=loop, name="model-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
