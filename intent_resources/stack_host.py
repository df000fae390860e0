"""What SageMaker's data plane does for the stack's endpoint: put the served model in the container.

moto keeps SageMaker's control plane (models, endpoint configs, endpoints) and runs nothing. This
loop stands in for the hosting fleet: it follows the endpoint (endpoint -> config -> model ->
ModelDataUrl) and, when the artifact changes, downloads it from S3 into the container's
``/opt/ml/model`` (atomically); the container watches that file and swaps models.

    python -m intent_resources.stack_host --endpoint-name intent --model-dir DIR
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Optional

from intent_resources.sagemaker_common import SageMakerError
from intent_resources.sagemaker_endpoint import SageMakerEndpointResource
from serving.local import install_model

log = logging.getLogger(__name__)


def sync_once(sagemaker: SageMakerEndpointResource, endpoint_name: str, model_dir: Path,
              served: Optional[str]) -> Optional[str]:
    """Install the endpoint's artifact when it differs from `served`; the URI now served."""
    uri = sagemaker.served_model_data_uri(endpoint_name)
    if uri is None or uri == served:
        return served
    staged = model_dir.parent / "staged" / "model.tar.gz"
    sagemaker.download(uri, staged)
    install_model(staged, model_dir)
    staged.unlink(missing_ok=True)
    log.warning("endpoint %s now serves %s", endpoint_name, uri)
    return uri


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m intent_resources.stack_host",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--endpoint-url", default=None, help="the moto server")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--ready-file", default=None, help="touched after the first look")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    # role and bucket are not used to read an endpoint; the resource requires them
    sagemaker = SageMakerEndpointResource(endpoint_url=args.endpoint_url, region_name=args.region,
                                          role_arn="unused", bucket="unused",
                                          inference_image="unused")
    served: Optional[str] = None
    while True:
        try:
            served = sync_once(sagemaker, args.endpoint_name, Path(args.model_dir), served)
        except SageMakerError as error:
            log.warning("endpoint %s: %s", args.endpoint_name, error)
        if args.ready_file:
            Path(args.ready_file).touch()
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
