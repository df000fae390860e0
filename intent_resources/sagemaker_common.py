"""What the SageMaker tuning and endpoint resources share: names, errors, S3 URIs and clients.

Both talk to the control planes through boto3 (no `sagemaker` SDK: it drags in pins we do not
want). In tests `endpoint_url` points at a moto server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from dagster import ConfigurableResource
from pydantic import PrivateAttr


class SageMakerError(RuntimeError):
    """A SageMaker job, endpoint or artifact is not what publication or tuning needs; says why."""


def sagemaker_name(*parts: str, max_length: int = 63) -> str:
    """A SageMaker resource name from parts: alphanumerics and single hyphens, within the limit.

    Anything else (dots, underscores, colons of a version string) becomes a hyphen. Too long is an
    error rather than a truncation, which could make two versions share a name.
    """
    joined = "-".join(str(p) for p in parts)
    name = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]", "-", joined)).strip("-")
    if not name:
        raise ValueError(f"no usable characters for a SageMaker name in {parts!r}")
    if len(name) > max_length:
        raise ValueError(f"SageMaker name {name!r} is {len(name)} characters; the limit is "
                         f"{max_length}")
    return name


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def error_code(error: Exception) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Code", "")


def error_message(error: Exception) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Message", str(error))


def is_missing(error: Exception) -> bool:
    """Whether a Describe* failed because the resource does not exist."""
    # SageMaker answers Describe* of an unknown resource with ValidationException "Could not find".
    return error_code(error) in ("ValidationException", "ResourceNotFound") and \
        "could not find" in error_message(error).lower()


class SageMakerBase(ConfigurableResource):
    """Account settings and boto3 clients shared by the tuning and endpoint resources."""

    region_name: str = "us-east-1"
    # A non-AWS endpoint for both SageMaker and S3 (the moto server in tests), else AWS.
    endpoint_url: Optional[str] = None
    role_arn: str
    bucket: str
    prefix: str = "intent"
    instance_type: str = "ml.m5.large"

    _clients: dict = PrivateAttr(default_factory=dict)

    def _client(self, service: str):
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            self._clients[service] = boto3.client(
                service, endpoint_url=self.endpoint_url, region_name=self.region_name,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        return self._clients[service]

    @property
    def sagemaker(self):
        return self._client("sagemaker")

    @property
    def s3(self):
        return self._client("s3")

    def s3_uri(self, *parts: str) -> str:
        """``s3://<bucket>/<prefix>/<parts...>``."""
        return "s3://" + "/".join([self.bucket, self.prefix.strip("/"), *parts])

    def _upload(self, local: Path, uri: str) -> str:
        bucket, key = split_s3_uri(uri)
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.upload_file(str(local), bucket, key)
        except (S3UploadFailedError, ClientError, BotoCoreError) as error:
            # upload_file wraps the ClientError; its message carries the S3 code (NoSuchBucket...).
            raise SageMakerError(f"could not upload {local} to {uri}: {error}") from error
        return uri

    def download(self, uri: str, local_path: Path) -> Path:
        """Copy an S3 object to `local_path` (atomically: a partial file never has that name)."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3_uri(uri)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        partial = local_path.with_name(local_path.name + ".partial")
        try:
            self.s3.download_file(bucket, key, str(partial))
        except (ClientError, BotoCoreError) as error:
            raise SageMakerError(f"could not download {uri}: {error}") from error
        partial.replace(local_path)
        return local_path

    def _call(self, operation: str, **kwargs) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return getattr(self.sagemaker, operation)(**kwargs)
        except ClientError as error:
            raise SageMakerError(f"{operation} failed: {error_message(error)}") from error

    def _describe_or_none(self, operation: str, **kwargs) -> Optional[dict[str, Any]]:
        from botocore.exceptions import ClientError

        try:
            return getattr(self.sagemaker, operation)(**kwargs)
        except ClientError as error:
            if is_missing(error):
                return None
            raise SageMakerError(f"{operation} failed: {error_message(error)}") from error
