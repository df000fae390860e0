"""The lake: parquet tables with daily partitions, on local disk or on S3 through boto3.

Layout (the same on both): ``{root}/{table}/date=YYYY-MM-DD/part-0.parquet`` for partitioned
tables and ``{root}/{table}/part-0.parquet`` for the rest. Writing a partition replaces it
whole, which is what makes re-materializing a partition idempotent.
"""


import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    ConfigurableIOManager,
    ConfigurableResource,
    InputContext,
    OutputContext,
    ResourceDependency,
)
from pydantic import PrivateAttr

from serving import s3_files

PART_FILE = "part-0.parquet"


class LakeStorage(ConfigurableResource):
    """A parquet lake rooted at a local directory or an ``s3://bucket/prefix`` URI."""

    root: str
    # Only for S3: a non-AWS endpoint (the moto server in tests), else boto3's default chain.
    endpoint_url: Optional[str] = None
    region_name: str = "us-east-1"

    _client = PrivateAttr(default=None)

    # -- addressing ---------------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def _key(self, table: str, partition: Optional[str] = None) -> str:
        return f"{table}/date={partition}" if partition else table

    def uri(self, table: str, partition: Optional[str] = None) -> str:
        """Where a table (or one partition of it) lives, as a path or an s3:// URI."""
        if self.is_s3:
            return f"{self.root.rstrip('/')}/{self._key(table, partition)}"
        return str(Path(self.root).resolve() / self._key(table, partition))

    def spark_uri(self, table: str, partition: Optional[str] = None) -> str:
        """The same location as Spark's Hadoop filesystem names it (s3a:// on S3)."""
        uri = self.uri(table, partition)
        return "s3a://" + uri[len("s3://"):] if self.is_s3 else uri

    # -- S3 plumbing --------------------------------------------------------------------------
    def _s3(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url,
                                        region_name=self.region_name)
        return self._client

    def _bucket_prefix(self, table: str, partition: Optional[str] = None) -> tuple[str, str]:
        parsed = urlparse(self.uri(table, partition))
        return parsed.netloc, parsed.path.lstrip("/")

    def _s3_keys(self, prefix_uri_table: str, partition: Optional[str]) -> list[str]:
        bucket, prefix = self._bucket_prefix(prefix_uri_table, partition)
        keys: list[str] = []
        for page in self._s3().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    # -- tables -------------------------------------------------------------------------------
    def write(self, frame: pd.DataFrame, table: str, partition: Optional[str] = None,
              schema: Optional[pa.Schema] = None) -> str:
        """Replace a table or one partition of it with `frame`; returns its URI.

        Pass `schema` for tables whose columns can be all-null in a partition, so every
        partition carries the same types and Spark can read them together.
        """
        data = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        self.delete(table, partition)
        if self.is_s3:
            sink = io.BytesIO()
            pq.write_table(data, sink)
            bucket, prefix = self._bucket_prefix(table, partition)
            self._s3().put_object(Bucket=bucket, Key=f"{prefix}/{PART_FILE}", Body=sink.getvalue())
        else:
            directory = Path(self.uri(table, partition))
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / f".{PART_FILE}.tmp"
            pq.write_table(data, tmp)
            tmp.replace(directory / PART_FILE)
        return self.uri(table, partition)

    def delete(self, table: str, partition: Optional[str] = None) -> None:
        if self.is_s3:
            keys = self._s3_keys(table, partition)
            bucket, _ = self._bucket_prefix(table, partition)
            for i in range(0, len(keys), 1000):
                self._s3().delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
        else:
            shutil.rmtree(self.uri(table, partition), ignore_errors=True)

    def exists(self, table: str, partition: Optional[str] = None) -> bool:
        if self.is_s3:
            return any(k.endswith(".parquet") for k in self._s3_keys(table, partition))
        return any(Path(self.uri(table, partition)).rglob("*.parquet"))

    def partitions(self, table: str) -> list[str]:
        """The partition keys a table holds, sorted."""
        if self.is_s3:
            bucket, prefix = self._bucket_prefix(table)
            names = {k[len(prefix) + 1:].split("/", 1)[0] for k in self._s3_keys(table, None)}
        else:
            base = Path(self.uri(table))
            names = {p.name for p in base.iterdir()} if base.is_dir() else set()
        return sorted(n.split("=", 1)[1] for n in names if n.startswith("date="))

    def read(self, table: str, partitions: Optional[list[str]] = None) -> pd.DataFrame:
        """Read a whole table, or only the given partitions (missing ones are skipped)."""
        if partitions is None:
            keys: list[Optional[str]] = self.partitions(table) or [None]
        else:
            keys = list(partitions)
        frames = []
        for key in keys:
            if not self.exists(table, key):
                continue
            frame = self._read_one(table, key)
            if key is not None and "date" not in frame.columns:
                frame["date"] = key
            frames.append(frame)
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)

    def _read_one(self, table: str, partition: Optional[str]) -> pd.DataFrame:
        if self.is_s3:
            bucket, _ = self._bucket_prefix(table, partition)
            parts = [k for k in self._s3_keys(table, partition) if k.endswith(".parquet")]
            return pd.concat(
                [pq.read_table(io.BytesIO(self._s3().get_object(Bucket=bucket, Key=k)["Body"]
                                          .read())).to_pandas() for k in parts],
                ignore_index=True)
        files = sorted(Path(self.uri(table, partition)).glob("*.parquet"))
        return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


class ArtifactStore(ConfigurableResource):
    """Model artifacts, baselines and reports: a local directory, or an S3 prefix.

    With `uri` (``s3://bucket/prefix``, prod) the store is on S3 and `root` is this process's
    working copy: a step writes under `directory(...)` and `save`s what it wrote (uploaded; the
    reference it returns is the S3 URI), and reads through `local(ref)` or `fetch(...)`
    (downloaded unless the copy is current). References therefore resolve on whichever machine
    runs the next step. Without `uri` the store is `root` itself and references are its paths.
    """

    root: str
    uri: Optional[str] = None
    # Only for S3: a non-AWS endpoint (the moto server in tests), else boto3's default chain.
    endpoint_url: Optional[str] = None
    region_name: str = "us-east-1"

    _client = PrivateAttr(default=None)

    @property
    def on_s3(self) -> bool:
        return bool(self.uri)

    def _s3(self):
        if self._client is None:
            self._client = s3_files.client(self.endpoint_url, self.region_name)
        return self._client

    def _base(self) -> Path:
        return Path(self.root).resolve()

    def _relative(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self._base()).as_posix()
        except ValueError:
            raise ValueError(f"{path} is not inside the artifact store's working copy "
                             f"{self._base()}") from None

    def directory(self, *parts: str) -> Path:
        """A local directory to write into (made if missing); `save` it, or files in it, after."""
        path = self._base().joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ref(self, path: str | Path) -> str:
        """The reference other steps resolve with `local`: the S3 URI on S3, else the path."""
        if not self.on_s3:
            return str(Path(path).resolve())
        return f"{self.uri.rstrip('/')}/{self._relative(Path(path))}"

    def save(self, path: str | Path) -> str:
        """Store a file or directory written under `directory(...)`; its reference.

        A directory replaces what was stored under it: save one only when this step wrote all
        of it (otherwise save the files it wrote)."""
        if self.on_s3:
            s3_files.upload(Path(path), self.ref(path), self._s3())
        elif not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist: nothing to save")
        return self.ref(path)

    def local(self, ref: str | Path) -> Path:
        """A local path holding the file or directory `ref` names (as `save` returned it)."""
        text = str(ref)
        if not self.on_s3:
            if s3_files.is_s3(text):
                raise ValueError(f"{text} is on S3 but this artifact store is the local "
                                 f"directory {self.root}: configure its uri (INTENT_MODELS_URI)")
            return Path(text)
        prefix = self.uri.rstrip("/") + "/"
        if s3_files.is_s3(text):
            if not text.startswith(prefix):
                raise ValueError(f"{text} is outside the artifact store {self.uri}")
            relative = text[len(prefix):]
        else:
            relative = self._relative(Path(text))
        target = self._base() / relative
        return s3_files.download(prefix + relative, target, self._s3())

    def fetch(self, *parts: str) -> Optional[Path]:
        """The local path of the store's `parts` (brought down from S3); None if nothing is there."""
        path = self._base().joinpath(*parts)
        if not self.on_s3:
            return path if path.exists() else None
        try:
            return self.local(path)
        except FileNotFoundError:
            return None


@dataclass(frozen=True)
class LakeSlice:
    """The partitions of an upstream table an asset asked for: what the IO manager hands over."""

    storage: LakeStorage
    table: str
    partitions: Optional[tuple[str, ...]]

    def existing(self) -> "list[str]":
        if self.partitions is None:
            return self.storage.partitions(self.table)
        return [p for p in self.partitions if self.storage.exists(self.table, p)]

    def pandas(self) -> pd.DataFrame:
        return self.storage.read(self.table, self.existing() if self.partitions else None)

    def spark(self, spark):
        """The slice as one Spark DataFrame, with the partition key as a `date` column."""
        base = self.storage.spark_uri(self.table)
        if self.partitions is None and not self.storage.partitions(self.table):
            return spark.read.parquet(base)
        keys = self.existing()
        if not keys:
            raise FileNotFoundError(f"none of {self.table} partitions {self.partitions} exist "
                                    f"under {base}; materialize them first")
        paths = [self.storage.spark_uri(self.table, k) for k in keys]
        return spark.read.option("basePath", base).parquet(*paths)


class LakeIOManager(ConfigurableIOManager):
    """Hands upstream lake tables to assets as `LakeSlice`s of the partitions they depend on.

    Assets here write their own tables (Spark writes in parallel, pandas through LakeStorage)
    and return MaterializeResult, so there is nothing to store on output.
    """

    lake: ResourceDependency[LakeStorage]

    def handle_output(self, context: OutputContext, obj) -> None:
        if obj is not None:
            raise TypeError(f"{context.asset_key.to_user_string()} returned a value; lake assets "
                            "write their table themselves and return MaterializeResult")

    def load_input(self, context: InputContext) -> LakeSlice:
        keys = tuple(context.asset_partition_keys) if context.has_asset_partitions else None
        return LakeSlice(self.lake, context.asset_key.path[-1], keys)
