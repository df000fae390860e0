"""A file or a directory tree mirrored between S3 and a local directory, through boto3.

In prod, model artifacts, baselines and reports live on S3 and each step works on a local copy:
it downloads what it reads and uploads what it wrote. A tree is mirrored exactly (objects under
the prefix with no local file are deleted on upload, local files with no object on download), so
a replaced directory such as ``uplift/current`` leaves nothing stale behind. Files are compared by
MD5 against the object's ETag (a single-part upload's MD5): an unchanged file is not sent again.
(Under SSE-KMS an ETag is not the MD5: every file is then transferred each time, still correct.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse


def is_s3(ref: str | os.PathLike) -> bool:
    return str(ref).startswith("s3://")


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` → ("bucket", "some/key")."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    return parsed.netloc, parsed.path.strip("/")


def client(endpoint_url: Optional[str] = None, region_name: Optional[str] = None):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url or None,
                        region_name=region_name or os.environ.get("AWS_DEFAULT_REGION")
                        or "us-east-1")


def _single_part():
    """One PUT per file up to 4 GiB, so every object's ETag is its MD5."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=4 << 30)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _objects(s3, bucket: str, prefix: str) -> dict[str, str]:
    """Key → ETag (quotes stripped) of every object under `prefix`."""
    found: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = obj["ETag"].strip('"')
    return found


def upload(local: Path, uri: str, s3) -> int:
    """Put the file or tree at `local` at `uri`; the number of files sent (unchanged ones are not).

    A tree replaces what was under ``uri/``: objects there with no local file are deleted."""
    bucket, key = split_uri(uri)
    local = Path(local)
    if local.is_file():
        remote = _objects(s3, bucket, key)
        if remote.get(key) == _md5(local):
            return 0
        s3.upload_file(str(local), bucket, key, Config=_single_part())
        return 1
    if not local.is_dir():
        raise FileNotFoundError(f"{local} does not exist: nothing to upload to {uri}")
    prefix = f"{key}/"
    remote = _objects(s3, bucket, prefix)
    sent = 0
    wanted = set()
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        target = prefix + path.relative_to(local).as_posix()
        wanted.add(target)
        if remote.get(target) != _md5(path):
            s3.upload_file(str(path), bucket, target, Config=_single_part())
            sent += 1
    stale = sorted(set(remote) - wanted)
    for i in range(0, len(stale), 1000):
        s3.delete_objects(Bucket=bucket,
                          Delete={"Objects": [{"Key": k} for k in stale[i:i + 1000]]})
    return sent


def download(uri: str, local: Path, s3) -> Path:
    """Make `local` hold what is at `uri` (an object, or the tree under ``uri/``); returns `local`.

    Raises FileNotFoundError when nothing is stored there."""
    bucket, key = split_uri(uri)
    local = Path(local)
    remote = _objects(s3, bucket, key)
    if key in remote:  # one object
        _fetch(s3, bucket, key, remote[key], local)
        return local
    prefix = f"{key}/"
    tree = {k: etag for k, etag in remote.items() if k.startswith(prefix)}
    if not tree:
        raise FileNotFoundError(f"nothing is stored at {uri}")
    wanted = set()
    for k, etag in tree.items():
        target = local / k[len(prefix):]
        wanted.add(target)
        _fetch(s3, bucket, k, etag, target)
    for path in [p for p in local.rglob("*") if p.is_file() and p not in wanted]:
        path.unlink()
    return local


def _fetch(s3, bucket: str, key: str, etag: str, target: Path) -> None:
    if target.is_file() and _md5(target) == etag:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    s3.download_file(bucket, key, str(partial))
    partial.replace(target)


def local_copy(ref: str, cache: Path, endpoint_url: Optional[str] = None) -> str:
    """A local path holding `ref`: an S3 URI is downloaded under `cache`, a path is returned as is."""
    if not is_s3(ref):
        return ref
    bucket, key = split_uri(ref)
    return str(download(ref, Path(cache) / bucket / key, client(endpoint_url)))
