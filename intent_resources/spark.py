"""Spark for the batch assets, through dagster-pyspark.

`local[*]` by default. The worker and driver Python are pinned to the interpreter running Dagster
(the venv's), and the driver binds to loopback unless told otherwise, so a fresh machine with no
Spark configuration works as-is.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from dagster import InitResourceContext
from dagster_pyspark import PySparkResource

# Small-data defaults for a 2-core box: few shuffle partitions, no UI, UTC everywhere.
LOCAL_SPARK_CONFIG: dict[str, Any] = {
    "spark.master": "local[*]",
    "spark.app.name": "intent",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "4g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}


def prepare_spark_environment() -> None:
    """Environment Spark reads at JVM start: the venv's Python and a loopback driver address."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


class SparkResource(PySparkResource):
    """dagster-pyspark's resource, with the environment prepared before the session starts.

    The session is `getOrCreate`d, so every asset of a run (and every test of a test run) shares
    one JVM.
    """

    def setup_for_execution(self, context: InitResourceContext) -> None:
        prepare_spark_environment()
        super().setup_for_execution(context)

