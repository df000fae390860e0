"""`ModelEndpointResource`: where a published model goes, and how it gets there.

``target="local"``: the project's inference container on this machine. The archive is copied
atomically into the local endpoint's model directory (``$INTENT_HOME/endpoint/model``) and the
running server is asked to reload (started first if none answers and `start_local` is set);
the server swaps models without failing a request.

``target="sagemaker"``: the nested `SageMakerEndpointResource` uploads the archive to S3, creates
the model and endpoint config, creates or updates (blue/green) the endpoint and waits until it
is InService on the new config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from dagster import ConfigurableResource

from intent_resources.sagemaker_endpoint import SageMakerEndpointResource

TARGETS = ("local", "sagemaker")


class ModelEndpointResource(ConfigurableResource):
    """The endpoint a gated model is published to."""

    target: str = "local"
    endpoint_name: str = "intent-local"
    # local: the project's state dir (None: INTENT_HOME, resolved when used) and the running
    # server's URL (None: the recorded local endpoint, started when `start_local`)
    home: Optional[str] = None
    local_url: Optional[str] = None
    start_local: bool = True
    # sagemaker
    sagemaker: Optional[SageMakerEndpointResource] = None
    poll_s: float = 15.0
    timeout_s: float = 3600.0

    def served_model_path(self) -> Optional[Path]:
        """The archive the endpoint serves now (the champion); None when nothing is served.

        Locally it is the container's model file. For SageMaker it is the endpoint's model
        artifact in S3 (endpoint -> endpoint config -> model -> ModelDataUrl), downloaded once
        per URI under ``$INTENT_HOME/champions``.
        """
        from serving.local import local_model_dir
        from serving.project import intent_home

        home = Path(self.home) if self.home else None
        if self.target != "sagemaker":
            served = local_model_dir(home) / "model.tar.gz"
            return served if served.exists() else None
        if self.sagemaker is None:
            raise ValueError("the sagemaker target needs a SageMakerEndpointResource")
        uri = self.sagemaker.served_model_data_uri(self.endpoint_name)
        if uri is None:
            return None
        import hashlib

        cached = (home or intent_home()) / "champions" / \
            hashlib.sha256(uri.encode()).hexdigest()[:16] / "model.tar.gz"
        return cached if cached.exists() else self.sagemaker.download(uri, cached)

    def publish(self, tar_path: str, version: str) -> dict[str, Any]:
        """Serve `tar_path` (model version `version`) on the endpoint; what was done."""
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if not Path(tar_path).is_file():
            raise FileNotFoundError(f"model archive {tar_path} does not exist")
        if self.target == "sagemaker":
            if self.sagemaker is None:
                raise ValueError("the sagemaker target needs a SageMakerEndpointResource")
            uri = self.sagemaker.upload_artifact(tar_path, version)
            result = self.sagemaker.publish(version, uri, self.endpoint_name, self.poll_s,
                                            self.timeout_s)
            return {"target": "sagemaker", **result}
        return self._publish_local(tar_path, version)

    def _publish_local(self, tar_path: str, version: str) -> dict[str, Any]:
        from serving.local import (
            ensure_local_endpoint,
            install_model,
            local_admin_token,
            local_model_dir,
            ping,
            recorded_endpoint,
            reload_endpoint,
        )

        home = Path(self.home).resolve() if self.home else None
        model_dir = local_model_dir(home)
        running = self.local_url or recorded_endpoint(home)
        served_before = (ping(running) or {}).get("model_version") if running else None
        installed = install_model(tar_path, model_dir)
        url = self.local_url or (ensure_local_endpoint(home) if self.start_local else None)
        if url is None:
            return {"target": "local", "endpoint_name": self.endpoint_name, "version": version,
                    "model_data_uri": str(installed), "status": "staged", "action": "staged"}
        answer = reload_endpoint(url, str(model_dir), local_admin_token(home))
        if answer.get("model_version") != version:
            raise RuntimeError(f"the local endpoint at {url} serves "
                               f"{answer.get('model_version')} after reloading, not {version}")
        pinged = ping(url) or {}
        return {"target": "local", "endpoint_name": self.endpoint_name, "endpoint_url": url,
                "version": version, "model_data_uri": str(installed),
                "status": pinged.get("status", "unknown"),
                # judged by what the endpoint served before the install: a server started now
                # loads the new model at once, so its reload cannot tell
                "action": "created" if served_before is None else
                          "unchanged" if served_before == version else "updated",
                "previous_version": served_before}
