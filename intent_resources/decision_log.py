"""The scoring API's decision log, read one UTC day at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource


class DecisionLogReader(ConfigurableResource):
    """Reads ``{directory}/date=YYYY-MM-DD/*.jsonl`` as the scoring API writes it; the directory
    is a path or an ``s3://bucket/prefix`` (read through boto3, which follows AWS_ENDPOINT_URL)."""

    directory: str

    def _day_files(self, day: str) -> list[str]:
        """The text of each of the day's JSON-lines files, in name order."""
        if self.directory.startswith("s3://"):
            import boto3

            bucket, _, prefix = self.directory[len("s3://"):].partition("/")
            prefix = f"{prefix.rstrip('/')}/date={day}/".lstrip("/")
            s3 = boto3.client("s3")
            keys = sorted(obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix) for obj in page.get("Contents", [])
                if obj["Key"].endswith(".jsonl"))
            return [s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode("utf-8")
                    for k in keys]
        files = sorted((Path(self.directory) / f"date={day}").glob("*.jsonl"))
        return [path.read_text(encoding="utf-8") for path in files]

    def read_day(self, day: str) -> pd.DataFrame:
        """Every decision record of one day; an empty frame when nothing was served."""
        records = []
        for text in self._day_files(day):
            # A writer killed mid-line leaves a torn last line; it is skipped, not fatal.
            for line in text.splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return pd.DataFrame.from_records(records)
