"""Where Feast reads the feature tables: parquet under the lake, one directory per table.

The tables are hive-partitioned (``date=YYYY-MM-DD/part-0.parquet``) and Feast's file offline
store reads the whole directory. The lake root comes from ``INTENT_LAKE``: a local directory, or an
``s3://`` URI in prod. Feast stores each source's resolved path in the registry at apply time, so
the environment seen by ``feast apply`` (or ``FeastResource.apply``) is what later reads use.
"""

import os
from pathlib import Path

from feast import FileSource, PushSource

# The project root, not the current directory: Feast's CLI chdirs into the repo before importing
# these modules, and the default lake must be the same whoever imports them.
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _lake_root() -> str:
    root = os.environ.get("INTENT_LAKE")
    if not root:
        home = os.environ.get("INTENT_HOME") or ".intent"
        root = str(Path(home) / "lake")
    if "://" in root:
        return root.rstrip("/")
    path = Path(root)
    return str(path if path.is_absolute() else (_PROJECT_ROOT / path).resolve())


def _table(name: str) -> str:
    return f"{_lake_root()}/{name}"


# Only for S3 outside AWS (a moto server); empty means boto's default endpoint.
_S3_ENDPOINT = os.environ.get("INTENT_S3_ENDPOINT_URL") or None

user_features_source = FileSource(
    name="user_features_source",
    path=_table("user_features"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    s3_endpoint_override=_S3_ENDPOINT,
    description="Daily user aggregates; a day's row is stamped at the next midnight (UTC).",
)

product_features_source = FileSource(
    name="product_features_source",
    path=_table("product_features"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    s3_endpoint_override=_S3_ENDPOINT,
    description="Daily product aggregates; a day's row is stamped at the next midnight (UTC).",
)

session_features_source = FileSource(
    name="session_features_source",
    path=_table("session_features"),
    timestamp_field="event_timestamp",
    s3_endpoint_override=_S3_ENDPOINT,
    description="Offline log of session features: closed sessions (stream), batch snapshots.",
)

session_features_push_source = PushSource(
    name="session_features_push_source",
    batch_source=session_features_source,
    description="The streaming job pushes live session features here.",
)
