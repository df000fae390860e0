"""The stack's moto server, with the SageMaker calls the pipeline makes that moto lacks.

moto (5.2) answers `UpdateEndpoint` with HTTP 500: it is not implemented. Publication moves an
endpoint to a new model by that call, as on AWS, so the stack's control plane gets it here, with
the outcome AWS documents once a blue/green update succeeds: the endpoint is InService on the new
endpoint config and its variants are the config's. What a real update also does (the new fleet
provisioned, traffic shifted, the old fleet retired, a rollback when the new one fails) is the
data plane's, which moto does not have; the stack's hosting stand-in (`stack_host`) follows the
endpoint's config to the new model. Where moto one day implements it, moto's own is kept.

Tuning jobs: moto records them and runs no trial; `stack_training` runs each job's trials as the
training container would and reports the best, and lists them
(`ListTrainingJobsForHyperParameterTuningJob`, which moto lacks).

    python -m intent_resources.stack_moto -H 127.0.0.1 -p PORT   # moto_server's arguments
"""

from __future__ import annotations

import sys
from typing import Optional


def update_endpoint(self):
    """`UpdateEndpoint` on moto's SageMaker: the endpoint moves to the new config's variants."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError

    name = self._get_param("EndpointName")
    config_name = self._get_param("EndpointConfigName")
    backend = self.sagemaker_backend
    if name not in backend.endpoints:
        raise ValidationError(message=f"Could not find endpoint '{name}'.")
    config = backend.describe_endpoint_config(config_name)
    endpoint = backend.endpoints[name]
    endpoint.endpoint_config_name = config_name
    endpoint.production_variants = endpoint._process_production_variants(
        config["ProductionVariants"])
    endpoint.last_modified_time = utcnow()
    return ActionResult({"EndpointArn": endpoint.arn})


def add_update_endpoint() -> bool:
    """Give moto's SageMaker `UpdateEndpoint` when it has none; whether it was added."""
    from moto.sagemaker.responses import SageMakerResponse

    if hasattr(SageMakerResponse, "update_endpoint"):
        return False
    SageMakerResponse.update_endpoint = update_endpoint
    return True


def main(argv: Optional[list[str]] = None) -> None:
    from moto.server import main as moto_main

    from intent_resources.stack_training import add_tuning_trials

    add_update_endpoint()
    add_tuning_trials()
    moto_main(argv)


if __name__ == "__main__":
    sys.exit(main())
