"""Feast, the feature store: the one door through which Dagster reaches feature definitions.

`FeastResource` points Feast at the feature repo (`feature_repo/`) and at one environment's
`feature_store.yaml` (`feature_repo/<env>/feature_store.yaml`). Those yaml files and the repo's
`data_sources.py` read their locations from environment variables (the same ones `feast -f`
needs on the command line); the resource sets them from its own config while Feast reads them,
and restores the previous values afterwards:

| variable | what | set from |
|---|---|---|
| `INTENT_HOME` | state dir, absolute; local registry `$INTENT_HOME/feast_registry.db` | `home` |
| `INTENT_LAKE` | lake root the FileSources read (a path, or `s3://…` in prod) | `lake_root` |
| `INTENT_FEAST_REDIS` | Feast's Redis connection string | `redis_url` |
| `INTENT_FEAST_REDIS_TYPE` | `redis`, or `redis_cluster` for a ``redis+cluster://`` URL | `redis_url` |
| `INTENT_FEAST_REGISTRY` | registry file URI, prod yaml only (`s3://…`) | `registry_path` |
| `INTENT_S3_ENDPOINT_URL`, `FEAST_S3_ENDPOINT_URL` | non-AWS S3 endpoint (moto) | `s3_endpoint_url` |

`import feast` costs seconds, so it happens inside methods, never when this module is imported.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional
from dagster import ConfigurableResource
from pydantic import PrivateAttr

from streaming_jobs.redis_target import parse_redis_url

ENVIRONMENTS = ("local", "prod")

# Loading the repo briefly owns process-wide state (environment variables, the repo's module
# names in sys.modules), so one load at a time.
_PROCESS_STATE_LOCK = threading.RLock()


def feast_redis_connection_string(url: str) -> str:
    """Feast's Redis `connection_string` (``host:port,db=N,...``) for a ``redis://`` URL.

    ``rediss://`` turns on TLS (``ssl=true``, what ElastiCache in-transit encryption needs);
    user and password from the URL become ``username=`` / ``password=``; query parameters pass
    through as ``key=value``. A ``redis[s]+cluster://`` URL gives every startup node
    (``h1:p1,h2:p2,...``) and no ``db=`` (a cluster has only database 0), for
    ``redis_type: redis_cluster`` (`feast_redis_type`). Feast splits the string on commas, so no
    part may contain one.
    """
    target = parse_redis_url(url)
    parts = [f"{host}:{port}" for host, port in target.nodes]
    options = []
    if not target.cluster:
        options.append(f"db={target.db}")
    if target.tls:
        options.append("ssl=true")
    if target.username:
        options.append(f"username={target.username}")
    if target.password:
        options.append(f"password={target.password}")
    options.extend(f"{key}={value}" for key, value in target.options)
    for part in options:
        if "," in part:
            raise ValueError("Feast's Redis connection string cannot carry a ',' in "
                             f"{part.split('=', 1)[0]!r}")
    return ",".join(parts + options)


def feast_redis_type(url: str) -> str:
    """Feast's `redis_type` for the URL: ``redis_cluster`` for a cluster, else ``redis``."""
    return "redis_cluster" if parse_redis_url(url).cluster else "redis"


def feast_environment(env: str, redis_url: str, lake_root: str, home: str,
                      registry_path: Optional[str] = None,
                      s3_endpoint_url: Optional[str] = None) -> dict[str, str]:
    """The environment variables the feature repo and its yaml files read, for one environment.

    Local paths are made absolute: Feast resolves a relative registry path against the repo
    directory, and its CLI chdirs into the repo before importing `data_sources.py`.
    """
    if env not in ENVIRONMENTS:
        raise ValueError(f"unknown Feast environment {env!r}; expected one of {ENVIRONMENTS}")

    def absolute(location: str) -> str:
        return location if "://" in location else str(Path(location).resolve())

    variables = {
        "INTENT_HOME": absolute(home),
        "INTENT_LAKE": absolute(lake_root).rstrip("/"),
        "INTENT_FEAST_REDIS": feast_redis_connection_string(redis_url),
        "INTENT_FEAST_REDIS_TYPE": feast_redis_type(redis_url),
    }
    if env == "prod":
        if not registry_path:
            raise ValueError("the prod Feast environment needs registry_path (an s3:// URI)")
        variables["INTENT_FEAST_REGISTRY"] = registry_path
    if s3_endpoint_url:
        variables["INTENT_S3_ENDPOINT_URL"] = s3_endpoint_url
        variables["FEAST_S3_ENDPOINT_URL"] = s3_endpoint_url  # Feast's S3 registry store reads it
    return variables


def load_repo_objects(repo_path: str | Path) -> list[Any]:
    """Every Feast object the repo's modules define: what `feast apply` would register.

    Each top-level ``*.py`` of the repo is imported afresh as a top-level module, exactly as
    Feast's CLI does (so the repo's ``from entities import user`` works), and removed from
    ``sys.modules`` again afterwards, so a later load with other environment variables (another
    lake) reads them again instead of reusing stale sources.
    """
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource, PushSource

    repo = Path(repo_path).resolve()
    names = sorted(p.stem for p in repo.glob("*.py") if p.name != "__init__.py")
    with _PROCESS_STATE_LOCK:
        saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
        sys.path.insert(0, str(repo))
        try:
            modules = [importlib.import_module(name) for name in names]
        finally:
            sys.path.remove(str(repo))
            for name in names:
                sys.modules.pop(name, None)
            sys.modules.update(saved)

    found: list[Any] = []

    def add(obj: Any) -> None:
        if not any(obj is seen for seen in found):
            found.append(obj)

    for module in modules:
        for value in vars(module).values():
            if isinstance(value, (Entity, FeatureView, FeatureService)):
                add(value)
            elif isinstance(value, DataSource):
                add(value)
                if isinstance(value, PushSource) and value.batch_source is not None:
                    add(value.batch_source)
    return found


class FeastResource(ConfigurableResource):
    """The feature store: the feature repo with one environment's `feature_store.yaml`."""

    repo_path: str
    env: str = "local"
    redis_url: str
    lake_root: str
    home: str
    # prod only: the registry's s3:// URI (local keeps it under `home`)
    registry_path: Optional[str] = None
    # Only for S3 outside AWS (a moto server); empty means boto's default chain.
    s3_endpoint_url: Optional[str] = None

    _store = PrivateAttr(default=None)

    @property
    def yaml_path(self) -> Path:
        """This environment's `feature_store.yaml`."""
        return Path(self.repo_path).resolve() / self.env / "feature_store.yaml"

    def environment(self) -> dict[str, str]:
        """The variables Feast's yaml and the repo modules read, as this resource sets them."""
        return feast_environment(self.env, self.redis_url, self.lake_root, self.home,
                                 self.registry_path, self.s3_endpoint_url)

    @contextmanager
    def _environment_set(self):
        # Feast reads its yaml, and the repo its data_sources.py, through os.environ only. The
        # variables are set while those are read and then restored, so two resources (other
        # lakes, other envs) in one process do not leak into each other.
        variables = self.environment()
        with _PROCESS_STATE_LOCK:
            previous = {name: os.environ.get(name) for name in variables}
            os.environ.update(variables)
            try:
                yield variables
            finally:
                for name, value in previous.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def store(self):
        """The `feast.FeatureStore` for this environment, built once per resource."""
        if self._store is None:
            from feast import FeatureStore

            with self._environment_set() as variables:
                if self.env == "local":
                    # Feast creates the registry's directory but not its parents.
                    Path(variables["INTENT_HOME"]).mkdir(parents=True, exist_ok=True)
                store = FeatureStore(repo_path=str(Path(self.repo_path).resolve()),
                                     fs_yaml_file=self.yaml_path)
                _ = store.registry  # built lazily, and the S3 registry store reads the environment
            self._store = store
        return self._store

    def apply(self) -> dict[str, list[str]]:
        """Register the repo's entities, sources, views and services; returns their names.

        Like `feast apply`, but in process; objects removed from the repo are not deleted.
        """
        store = self.store()
        with self._environment_set():
            objects = load_repo_objects(self.repo_path)
        store.apply(objects)
        summary: dict[str, list[str]] = {}
        for obj in objects:
            summary.setdefault(type(obj).__name__, []).append(obj.name)
        return {kind: sorted(names) for kind, names in summary.items()}

    def online_features(self, entity_rows: list[dict[str, Any]],
                        feature_service_name: str) -> dict[str, list[Any]]:
        """The online values of a feature service's features for `entity_rows`, column-wise."""
        store = self.store()
        service = store.get_feature_service(feature_service_name)
        return store.get_online_features(features=service, entity_rows=entity_rows).to_dict()
